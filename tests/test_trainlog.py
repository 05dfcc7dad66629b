"""segda.trainlog's progress bar: a short postfix whatever the method logs."""

import io

from tqdm.std import tqdm

from segda import trainlog

# What AdvEnt (multi-level, with the step diagnostics) logs in one step.
ADVENT_STEP = {
    "iteration": 41, "seg_main": 0.4123, "seg_aux": 0.0517, "diag_grad_source": 3.21,
    "adv_main": 0.001234, "adv_aux": 0.0002345, "diag_grad_target": 0.81,
    "disc_main_src": 0.6931, "disc_aux_src": 0.6925, "disc_main_tgt": 0.6940,
    "disc_aux_tgt": 0.6938, "diag_dacc_main_src": 0.52, "diag_dacc_aux_src": 0.49,
    "diag_dacc_main_tgt": 0.51, "diag_dacc_aux_tgt": 0.50,
}


def test_postfix_sums_the_terms_into_three_short_values():
    post = trainlog.bar_postfix(ADVENT_STEP)
    assert list(post) == ["seg", "tgt", "D"]
    assert post["seg"] == f"{0.4123 + 0.0517:.3g}" and post["tgt"] == f"{0.001234 + 0.0002345:.3g}"
    assert post["D"] == f"{0.6931 + 0.6925 + 0.6940 + 0.6938:.3g}"
    # source-only logs the segmentation loss only; MinEnt's target term is its entropy
    assert trainlog.bar_postfix({"iteration": 0, "seg_main": 1.0}) == {"seg": "1"}
    assert trainlog.bar_postfix({"seg_main": 1.0, "ent_main": 0.25}) == {"seg": "1", "tgt": "0.25"}


def test_an_advent_postfix_stays_short_on_the_bar():
    bar = tqdm(total=200, file=io.StringIO())
    bar.set_postfix(trainlog.bar_postfix(ADVENT_STEP))
    assert len(bar.postfix) < 60, bar.postfix
    bar.close()


def test_a_bar_is_labelled_with_its_run_not_its_method():
    from segda import config

    oracle = config.load("embedded/oracle")
    assert oracle.method.name == "source_only"  # why the method's name would mislead
    bar = trainlog.progress_bar(oracle, 0, 10, "notebook", name="oracle")
    assert bar.desc == "oracle"
    bar.close()
    unnamed = trainlog.progress_bar(oracle, 0, 10, "notebook")
    assert unnamed.desc == "source_only"
    unnamed.close()


def test_plain_lines_of_a_run_stopped_early_count_to_its_whole_length():
    out = io.StringIO()
    part = trainlog.PlainProgress("advent", 50, 100, out, every=50, total=200)
    for _ in range(50):
        part.update()
        part.set_postfix({"seg": "0.1"})
    part.close()
    assert out.getvalue().splitlines() == ["advent: iteration 100/200, 0 s, seg 0.1"]
    idle = io.StringIO()
    trainlog.PlainProgress("advent", 100, 100, idle, total=200).close()
    assert idle.getvalue() == ""  # a chunk with nothing to train says nothing
