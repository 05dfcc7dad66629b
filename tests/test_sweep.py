"""Sweeps: the documented example (docs/notebooks.md, linked from the README) as written (at
tiny length), the presets checked against their
notebook before anything runs, one failed job leaving the others' table, and ``collect``
grouping runs by config rather than by folder name."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from segda import cli, config, notebooks_runner, results, rows, runs, train

REPO = Path(__file__).resolve().parents[1]
# The notebook tests' tiny length; appended after the README's own -p, so these win.
TINY = ["-p", "max_iters=2", "-p", "eval_images=2", "-p", "batch_size=2", "-p", "image_size=[64,32]",
        "-p", "pretrain_iters=4", "-p", "device=cpu"]


# Where the sweep example is documented (the README links to it).
SWEEP_DOC = REPO / "docs" / "notebooks.md"


def readme_sweep_command() -> list[str]:
    """The documented ``python -m segda sweep`` command (with its continuation lines), as argv."""
    text = SWEEP_DOC.read_text()
    match = re.search(r"^python -m segda sweep (?:.*\\\n)*.*$", text, re.MULTILINE)
    assert match, f"{SWEEP_DOC.name} has no 'python -m segda sweep' example"
    return shlex.split(match.group(0).replace("\\\n", " "))[3:]  # after "python -m segda"


def with_out(argv: list[str], out: Path) -> list[str]:
    argv = list(argv)
    argv[argv.index("--out") + 1] = str(out)
    return argv


def run_readme_sweep(out: Path):
    """The README's sweep, run serially at tiny length into ``out`` (the ``readme_sweep``
    fixture of conftest.py; other tests compare against its runs)."""
    argv = with_out(readme_sweep_command(), out)
    argv[argv.index("--notebook") + 1] = str(REPO / argv[argv.index("--notebook") + 1])
    return out, argv, cli.main(argv + TINY)


def test_the_readme_sweep_example_runs_and_writes_its_table(readme_sweep, capsys):
    out, argv, rc = readme_sweep
    assert rc == 0
    presets = argv[argv.index("--presets") + 1:argv.index("--seeds")]
    seeds = [int(s) for s in argv[argv.index("--seeds") + 1:argv.index("-p")]]
    table = (out / "results.md").read_text()
    for preset in presets:
        assert f"| {rows.label(preset.split('/')[-1])} |" in table
    # One control per seed in the table, although every preset's folder trained its own.
    summary = pd.read_csv(out / "results.csv", index_col=0)
    assert summary.loc[rows.label("source_only_tgt_bn"), "seeds"] == len(seeds)
    assert summary.loc[rows.label("source_only_tgt_bn"), "gain vs training-mode BN"] == 0
    # The table's row is the mean over the seeds of the runs' own metrics.json.
    finals = [100 * runs.read_metrics(out / presets[0].replace("/", "_") / f"seed{s}" /
                                      f"seed{s}" / presets[0].split("/")[-1])["evals"][-1]["target_miou"]
              for s in seeds]
    row = summary.loc[rows.label(presets[0].split("/")[-1])]
    assert row["target mIoU"] == pytest.approx(sum(finals) / len(finals))
    # collect on the finished folder gives the same table again.
    assert cli.main(["collect", str(out)]) == 0
    assert (out / "results.md").read_text() == table


def test_a_preset_no_notebook_can_run_stops_the_sweep_before_anything_runs(tmp_path, capsys):
    argv = ["sweep", "--notebook", str(REPO / "notebooks/05_minent.ipynb"), "--out", str(tmp_path),
            "--presets", "embedded/minent", "embedded/source_only_tgt_bn", "embedded/no_such_preset",
            "--seeds", "0"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2  # one line per preset that cannot run, nothing else
    # every method notebook trains the training-mode BN row itself, beside its own preset
    assert err[0].startswith("error: embedded/source_only_tgt_bn cannot run in 05_minent.ipynb")
    assert "nor in any other notebook" in err[0]
    assert "python -m segda train embedded/source_only_tgt_bn" in err[0]
    assert err[1].startswith("error: embedded/no_such_preset:")
    assert not any(tmp_path.iterdir())  # nothing trained


def test_a_preset_of_another_method_runs_in_its_own_notebook():
    jobs, notes = notebooks_runner.plan_sweep(REPO / "notebooks/06_advent.ipynb", "/tmp/unused",
                                              ["embedded/advent", "embedded/minent"], [0, 1])
    assert [(Path(j.notebook).name, j.preset, j.seed) for j in jobs] == [
        ("06_advent.ipynb", "embedded/advent", 0), ("06_advent.ipynb", "embedded/advent", 1),
        ("05_minent.ipynb", "embedded/minent", 0), ("05_minent.ipynb", "embedded/minent", 1)]
    assert notes == ["embedded/minent runs in 05_minent.ipynb: 06_advent.ipynb writes out and plots "
                     "the 'advent' update, embedded/minent trains 'minent'; method 'minent' has no "
                     "discriminator"]
    # A row the notebook trains beside its preset is not a preset it can run.
    assert "trains oracle itself" in notebooks_runner.why_not_runnable(
        REPO / "notebooks/01_source_only.ipynb", "embedded/oracle")


def test_a_failed_job_leaves_the_other_jobs_and_their_table(tmp_path, capsys):
    from segda.notebooks_runner import SweepJob

    good = SweepJob(str(REPO / "notebooks/01_source_only.ipynb"), "embedded/source_only", 0,
                    str(tmp_path / "good"), {"max_iters": 2, "eval_images": 2, "batch_size": 2,
                                             "image_size": [64, 32], "pretrain_iters": 4})
    # Fails in its first training cell: a batch size the config refuses.
    bad = SweepJob(good.notebook, good.preset, 1, str(tmp_path / "bad"), {**good.parameters, "batch_size": 0})
    written, failures = notebooks_runner.sweep(None, tmp_path, [], [], jobs=[bad, good])
    assert written == [good.output]
    assert len(failures) == 1 and failures[0].startswith("embedded_source_only/seed1 failed: ")
    assert failures[0].endswith(f"(see {bad.output})") and bad.output.exists()
    assert "| source-only (control) |" in results.write_results(tmp_path)


def _tiny_run(run_dir: Path, preset: str, iters: int):
    cfg = config.load(preset, {"optim.max_iters": iters, "optim.early_stop": iters, "data.batch_size": 2,
                               "data.source_size": [64, 32], "data.target_size": [64, 32],
                               "run.eval_max_images": 2, "run.device": "cpu", "run.progress": False})
    train.fit(cfg, run_dir)


def test_collect_groups_runs_by_config_not_by_folder_name(tmp_path, capsys):
    # Two trees with the same control (same config: one run) and AdvEnt at two lengths.
    for tree, iters in (("a", 1), ("b", 2)):
        _tiny_run(tmp_path / tree / "seed0" / "source_only_tgt_bn", "embedded/source_only_tgt_bn", 1)
        _tiny_run(tmp_path / tree / "seed0" / "advent", "embedded/advent", iters)
    collected = runs.collect(tmp_path)
    kept, notes = results.by_config(collected)
    assert len(collected) == 4 and len(kept) == 3
    control = collected.set_index("run").loc["b/seed0/source_only_tgt_bn", "config_hash"]
    assert (f"left out b/seed0/source_only_tgt_bn: the same config ({control}) "
            "as a/seed0/source_only_tgt_bn") in notes
    table = results.summarize(kept)
    advent = [k for k in table.index if k.startswith("advent@")]
    assert len(advent) == 2 and all(table.loc[k, "seeds"] == 1 for k in advent)
    for tree in ("a", "b"):
        m = json.loads((tmp_path / tree / "seed0" / "advent" / "metrics.json").read_text())
        cfg = runs.read_config(tmp_path / tree / "seed0" / "advent")
        setting = runs.config_hash(cfg.replace({"run.seed": 0}))
        assert table.loc[f"advent@{setting}", "target mIoU"] == \
            pytest.approx(100 * m["evals"][-1]["target_miou"])
    assert cli.main(["collect", str(tmp_path)]) == 0


def test_minent_with_the_class_ratio_prior_runs_in_the_minent_notebook():
    """05 reads MinEnt + CP from the reference instead of training it beside MinEnt, so the
    preset is one 05 runs as its own (its first exercise)."""
    jobs, notes = notebooks_runner.plan_sweep(REPO / "notebooks/05_minent.ipynb", "/tmp/unused",
                                              ["embedded/minent_cp"], [0])
    assert [(Path(j.notebook).name, j.preset) for j in jobs] == [("05_minent.ipynb", "embedded/minent_cp")]
    assert notes == []
