"""The embedded experiment's bookkeeping: the results table and paired variants."""

import math
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import yaml

from segda import decomposition, experiments, results, rows, runs, train

TINY = {"data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.max_iters": 2, "optim.early_stop": 2, "run.device": "cpu", "run.progress": False,
        "run.eval_max_images": 4, "method.disc_ndf": 8}


def _runs(rows, **extra):
    return pd.DataFrame([{"run": f"seed{s}/{key}", "seed": s, "target_miou": t, "source_miou": 80.0,
                          **extra} for key, s, t in rows])


def test_summarize_pairs_gains_per_seed_and_lists_variants_last():
    df = _runs([
        ("source_only", 0, 40.0), ("source_only", 1, 50.0), ("adabn", 0, 58.0), ("adabn", 1, 55.0),
        ("source_only_tgt_bn", 0, 60.0), ("source_only_tgt_bn", 1, 56.0),
        ("advent", 0, 63.0), ("advent", 1, 57.0),
        ("output_adv_single@lam0.001", 0, 61.0), ("output_adv_single@lam0.001", 1, 55.0),
    ])
    table = results.summarize(df)
    assert list(table.index) == ["source-only (control)", "AdaBN (target statistics, no training)",
                                 "training-mode BN on target (no target loss)", "AdvEnt",
                                 "output_adv_single@lam0.001"]
    advent = table.loc["AdvEnt"]
    assert advent["target mIoU"] == pytest.approx(60.0)
    assert advent["std"] == pytest.approx(math.sqrt(18.0))  # (63-60)^2 + (57-60)^2, ddof 1
    # paired: seed 0 63-40 = 23, seed 1 57-50 = 7 -> 15; vs AdaBN 5 and 2 -> 3.5; vs the
    # training-mode row 3 and 1 -> 2
    assert advent["gain vs source-only"] == pytest.approx(15.0)
    assert advent["gain vs AdaBN"] == pytest.approx(3.5)
    assert advent["gain vs training-mode BN"] == pytest.approx(2.0)
    variant = table.loc["output_adv_single@lam0.001"]
    assert variant["gain vs training-mode BN"] == pytest.approx(0.0)  # 61-60, 55-56
    text = results.format_table(table)
    assert "| AdvEnt | 60.0 +/- 4.2 | 80.0 | +15.0 | +3.5 | +2.0 | 2 |" in text


def test_run_variant_warm_starts_from_the_seeds_pretrained_checkpoint(tmp_path):
    over = {**TINY, "method.lambda_adv_main": 0.123}
    result = experiments.run_variant(tmp_path, 5, "output_adv_single", "lam", over,
                                     pretrain_overrides=TINY, pretrained="train")
    saved = yaml.safe_load((tmp_path / "seed5" / "lam" / "config.yaml").read_text())
    assert saved["model"]["init_checkpoint"] == str(tmp_path / "seed5" / "source_pretrain" / "last.pth")
    assert saved["method"]["lambda_adv_main"] == 0.123 and saved["run"]["seed"] == 5
    assert result.state.iteration == 2
    with pytest.raises(ValueError, match="advent"):
        experiments.run_variant(tmp_path, 5, "advent", "advent", TINY, pretrain_overrides=TINY)
    # By default a variant starts, like the suite's rows, from the shipped checkpoint.
    experiments.run_variant(tmp_path, 6, "output_adv_single", "lam", over)
    saved = yaml.safe_load((tmp_path / "seed6" / "lam" / "config.yaml").read_text())
    assert saved["model"]["init_checkpoint"] == "shipped:embedded_source_pretrain"
    assert not (tmp_path / "seed6" / "source_pretrain").exists()


def test_select_variant_pairs_variant_rows_with_each_other():
    df = _runs([
        ("source_only_tgt_bn", 0, 60.0), ("advent", 0, 62.0),
        ("source_only_tgt_bn@400it", 0, 61.0), ("advent@400it", 0, 64.5),
        ("advent+minent@400it", 0, 63.0), ("advent@other", 0, 10.0),
    ])
    chosen = results.select_variant(df, "@400it")
    assert sorted(chosen["run"]) == ["seed0/advent", "seed0/advent+minent", "seed0/source_only_tgt_bn"]
    table = results.summarize(chosen)
    assert table.loc["AdvEnt", "gain vs training-mode BN"] == pytest.approx(3.5)  # 64.5 - 61, not - 60
    assert table.loc["AdvEnt + MinEnt (ensemble)", "gain vs training-mode BN"] == pytest.approx(2.0)


def test_results_block_says_what_produced_the_table_and_leaves_variants_out():
    df = _runs([("source_only", 0, 40.0), ("advent", 0, 50.0), ("advent@400it", 0, 51.0)],
               cpu="Some CPU", gpu="", torch="2.14.1", threads="2")
    df["wall_time_s"] = [10.0, float("nan"), 99.0]
    block = results.results_block(df, wall_time_s=123.4)
    assert "| AdvEnt | 50.0 | 80.0 | +10.0 | - | - | 1 |" in block
    assert "advent@400it" not in block
    assert "2 runs over seeds [0]; machine: Some CPU (torch threads per run: 2); torch 2.14.1." in block
    assert "Training wall time recorded for 1 of 2 runs: 10 s in all." in block
    assert "This command's wall time: 123 s." in block


def test_write_readme_block_replaces_only_the_marked_text(tmp_path):
    readme = tmp_path / "README.md"
    begin = results.README_BEGIN.format(name="embedded")
    end = results.README_END.format(name="embedded")
    readme.write_text(f"# title\n\nbefore\n{begin}\nold table\n{end}\nafter\n")
    results.write_readme_block(readme, "embedded", "| new | table |")
    assert readme.read_text() == f"# title\n\nbefore\n{begin}\n| new | table |\n{end}\nafter\n"
    with pytest.raises(ValueError, match="segda:results other begin"):
        results.write_readme_block(readme, "other", "x")


def test_ensemble_command_evaluates_the_members_sum_of_logits(tmp_path):
    import json

    from segda import cli, evaluate
    from segda.data import registry

    for preset in ("minent", "advent"):
        experiments.run_variant(tmp_path, 1, preset, f"{preset}@x", TINY, pretrain_overrides=TINY)
    assert cli.main(["ensemble", "--members", "advent@x", "minent@x", "--seeds", "1",
                     "--run-root", str(tmp_path), "--name", "advent+minent@x"]) == 0
    written = json.loads((tmp_path / "seed1" / "advent+minent@x" / "metrics.json").read_text())
    assert written["ensemble"]["weights"] == [0.5, 0.5]
    members = [train.load_run(tmp_path / "seed1" / m) for m in ("advent@x", "minent@x")]
    data = registry.build_datasets(members[0].config.data, members[0].config.model)
    direct = evaluate.evaluate([m.seg for m in members], data.val_target, weights=[0.5, 0.5],
                               max_images=members[0].config.run.eval_max_images or None)
    assert written["evals"][0]["target_miou"] == pytest.approx(direct.miou, abs=1e-12)


def test_train_eval_and_suite_commands_end_to_end(tmp_path, capsys):
    import json

    from segda import cli, evaluate
    from segda.data import registry

    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    assert cli.main(["train", "embedded/minent", "--run-dir", str(tmp_path / "t"), *sets]) == 0
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "t" / "last.pth"), "--max-images", "4",
                     "--device", "cpu"]) == 0
    run = train.load_run(tmp_path / "t")
    data = registry.build_datasets(run.config.data, run.config.model)
    direct = evaluate.evaluate(run.seg, data.val_target, max_images=4, device="cpu")
    table = pd.read_csv(tmp_path / "t" / "eval_last_embedded_4img_19cls.csv", index_col=0)
    assert table["mIoU"].iloc[0] == pytest.approx(100 * direct.miou, abs=1e-9)

    readme = tmp_path / "README.md"
    readme.write_text(results.README_BEGIN.format(name="embedded") + "\n"
                      + results.README_END.format(name="embedded") + "\n")
    pre = [x for k, v in TINY.items() for x in ("--pretrain-set", f"{k}={json.dumps(v)}")]
    ada = [x for k, v in TINY.items() for x in ("--adapt-set", f"{k}={json.dumps(v)}")]
    capsys.readouterr()
    # The README's command for another seed, as written, at tiny length and with one study.
    text = (Path(__file__).parents[1] / "README.md").read_text()
    command = re.search(r"<!-- segda:commands another-seed -->\n\s*```\n\s*(.*?)\n\s*```", text,
                        re.S).group(1)
    argv = shlex.split(command)[3:]
    assert argv[0] == "suite" and "--seeds" in argv
    seed = int(argv[argv.index("--seeds") + 1])
    assert cli.main([*argv, "--run-root", str(tmp_path / "suite"), *pre, *ada, "--studies", "lambda",
                     "--readme", str(readme), "--reference", str(tmp_path / "ref.csv")]) == 0
    out = capsys.readouterr().out
    assert "wall time" in out and "this run inside the reference's range" in out
    trained = set(runs.collect(tmp_path / "suite")["run"])
    sweep = [r.name for r in experiments.STUDIES["lambda"] if r.overrides]
    assert len(sweep) == 2
    derived = [decomposition.derived_name(k) for k in (*rows.adaptation(), "advent+minent")]
    assert trained == {f"seed{seed}/{k}" for k in ("oracle", *rows.adaptation(), "advent+minent",
                                           *sweep, *derived)}
    reference = results.read_reference(tmp_path / "ref.csv")
    assert set(reference["run"]) == trained
    assert set(reference["iterations"]) == {2}  # the sweep got the suite's --adapt-set too
    assert set(reference.loc[reference["key"] == "advent", "start"]) == {
        "shipped:embedded_source_pretrain"}
    written = readme.read_text()
    assert "| AdvEnt + MinEnt (ensemble) |" in written and "This command's wall time:" in written
