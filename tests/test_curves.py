"""A run trained in chunks with its target curve: the same run as one trained without
stopping, and each point the score of the model at that iteration."""

import pytest
import torch

from segda import config, curves, evaluate, train
from segda.data import registry

TINY = {"data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.max_iters": 6, "optim.early_stop": 6, "run.device": "cpu", "run.progress": False,
        "run.eval_max_images": 4, "method.disc_ndf": 8, "model.init_checkpoint": ""}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    cfg = config.load("embedded/advent", TINY)
    data = registry.build_datasets(cfg.data, cfg.model)
    chunked, curve = curves.train_with_curve(root / "chunked", cfg, data, every=2, images=4,
                                             progress_bar="none")
    plain = train.fit(cfg, root / "plain", data=data, progress_bar="none")
    return cfg, data, root, chunked, curve, plain


def test_a_run_trained_in_chunks_is_the_run_trained_at_once(trained):
    cfg, data, root, chunked, curve, plain = trained
    a, b = chunked.seg.state_dict(), plain.seg.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert chunked.state.history == plain.state.history
    assert chunked.final_eval["target_miou"] == plain.final_eval["target_miou"]


def test_each_point_scores_the_model_of_its_iteration(trained):
    cfg, data, root, chunked, curve, plain = trained
    assert curve["iteration"].tolist() == [0, 2, 4, 6]
    assert (curve["images"] == 4).all()
    # the last point is the final model, scored on the same 4 images as the final evaluation
    assert curve["target_miou"].iloc[-1] == pytest.approx(100 * plain.final_eval["target_miou"])
    # the middle point is the model after 4 iterations of the same run (a run stopped there)
    four = train.fit(cfg, root / "four", data=data, stop_at=4, progress_bar="none")
    miou = evaluate.evaluate(four.seg, data.val_target, evaluate.Predictor.from_config(cfg),
                             max_images=4).miou
    assert curve.set_index("iteration").loc[4, "target_miou"] == pytest.approx(100 * miou)
    entropy = evaluate.mean_entropy(four.seg, data.val_target, max_images=4, device="cpu")
    assert curve.set_index("iteration").loc[4, "target_entropy"] == pytest.approx(entropy)


def test_a_finished_run_is_reused_with_its_stored_curve(trained, monkeypatch):
    cfg, data, root, chunked, curve, plain = trained

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(train, "fit", no_training)
    again, stored = curves.train_with_curve(root / "chunked", cfg, data, every=2, images=4)
    assert stored.equals(curve)
    # a run finished without a curve has none to show
    _, none = curves.train_with_curve(root / "plain", cfg, data, every=2, images=4)
    assert none is None and curves.read(root / "plain") is None


def test_bad_chunk_sizes_are_refused(trained, tmp_path):
    cfg, data, *_ = trained
    with pytest.raises(ValueError, match="every and images must be at least 1"):
        curves.train_with_curve(tmp_path / "x", cfg, data, every=0)


def test_the_curve_figure_names_its_runs_and_axes(trained):
    from segda import viz

    cfg, data, root, chunked, curve, plain = trained
    fig = viz.plot_target_curves({"AdvEnt": curve, "reused": None}, history=chunked.history_frame())
    assert fig.get_size_inches()[0] * fig.dpi <= viz.MAX_WIDTH_PX
    miou, entropy, disc = fig.axes
    assert miou.get_ylabel() == "mIoU (%)" and entropy.get_ylabel() == "entropy (0 to 1)"
    assert [line.get_label() for line in miou.lines] == ["AdvEnt"]
    assert list(miou.lines[0].get_ydata()) == pytest.approx(curve["target_miou"].tolist())
    assert disc.get_ylabel() == "share of cells right"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["AdvEnt"]
    with pytest.raises(ValueError, match="no curve to plot"):
        viz.plot_target_curves({"reused": None})
