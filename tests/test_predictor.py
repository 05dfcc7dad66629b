"""One prediction spec: a run trained with ``run.align_corners: false`` (or ``run.amp: true``)
gets the same mIoU from its fit loop, ``python -m segda eval``, the ledger and the ensemble on
the same images; and the evaluation and ledger commands' wrong inputs give one line."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from segda import cli, evaluate, experiments, ledger, train
from segda.data import registry

IMAGES = 4
TINY = {"data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.max_iters": 3, "optim.early_stop": 3, "method.disc_ndf": 8,
        "model.init_checkpoint": "shipped:embedded_source_pretrain",  # predictions worth comparing
        "run.device": "cpu", "run.progress": False, "run.eval_max_images": IMAGES,
        "run.checkpoint_every": 2, "run.keep_snapshots": True}


def _train(run_dir, preset="embedded/minent", **over):
    sets = [x for k, v in {**TINY, **over}.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    assert cli.main(["train", preset, "--run-dir", str(run_dir), *sets]) == 0
    return train.load_run(run_dir)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Runs of one seed: align_corners false (two methods, for an ensemble) and amp true."""
    root = tmp_path_factory.mktemp("predictor") / "seed0"
    return root, {
        "minent": _train(root / "minent", **{"run.align_corners": False}),
        "advent": _train(root / "advent", "embedded/advent", **{"run.align_corners": False}),
        "amp": _train(root / "amp", **{"run.amp": True}),
    }


def _eval(capsys, *checkpoints, extra=()) -> tuple[float, str]:
    """mIoU (%) of the eval command's table, read from the file it says it wrote, and that
    file's name."""
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", *map(str, checkpoints), "--max-images", str(IMAGES),
                     "--device", "cpu", *extra]) == 0
    out = capsys.readouterr().out
    md = out.splitlines()[-1].removeprefix("wrote ").removesuffix(".md and .csv")
    return float(pd.read_csv(f"{md}.csv", index_col=0)["mIoU"].iloc[0]), Path(f"{md}.md").name


@pytest.mark.parametrize("name", ["minent", "amp"])
def test_fit_loop_eval_ledger_and_ensemble_give_one_number(trained, name, capsys, tmp_path):
    root, runs = trained
    run = runs[name]
    fit = 100 * run.final_eval["target_miou"]
    assert _eval(capsys, root / name / "last.pth")[0] == pytest.approx(fit, abs=0.005)  # 2 decimals
    capsys.readouterr()
    assert cli.main(["ledger", str(root / name), "--max-images", str(IMAGES), "--device", "cpu",
                     "--out", str(tmp_path / name)]) == 0
    snaps = pd.read_csv(tmp_path / name / ledger.SNAPSHOTS_CSV)
    last = snaps[snaps["last"]]
    assert last["miou"].item() == pytest.approx(fit, abs=1e-9)
    assert last["prediction"].item() == (
        "align_corners=True amp=True" if name == "amp" else "align_corners=False amp=False")
    data = registry.build_datasets(run.config.data, run.config.model)
    alone = experiments.evaluate_ensemble(tmp_path, 0, runs, data, members=[name], weights=[1.0],
                                          max_images=IMAGES, device="cpu")
    assert 100 * alone.miou == pytest.approx(fit, abs=1e-9)


def test_the_switch_changes_the_number_so_the_check_can_fail(trained):
    run = trained[1]["minent"]
    data = registry.build_datasets(run.config.data, run.config.model)
    spec = evaluate.Predictor.from_config(run.config)
    own = evaluate.evaluate(run.seg, data.val_target, spec, max_images=IMAGES)
    official = evaluate.evaluate(run.seg, data.val_target, spec.replace(align_corners=True),
                                 max_images=IMAGES)
    assert own.miou == run.final_eval["target_miou"]
    assert not torch.equal(own.confusion, official.confusion)
    amp = trained[1]["amp"]
    fp32 = evaluate.evaluate(amp.seg, data.val_target, evaluate.Predictor.from_config(
        amp.config).replace(amp=False), max_images=IMAGES)
    assert not torch.equal(fp32.confusion, evaluate.evaluate(
        amp.seg, data.val_target, evaluate.Predictor.from_config(amp.config),
        max_images=IMAGES).confusion)


def test_an_ensembles_number_is_the_same_from_eval_and_from_the_experiment(trained, capsys,
                                                                           tmp_path):
    root, runs = trained
    members = {k: runs[k] for k in ("advent", "minent")}
    data = registry.build_datasets(runs["advent"].config.data, runs["advent"].config.model)
    ens = experiments.evaluate_ensemble(tmp_path, 0, members, data, members=["advent", "minent"],
                                        weights=[0.3, 0.7], max_images=IMAGES, device="cpu")
    got = _eval(capsys, root / "advent" / "last.pth", root / "minent" / "last.pth",
                     extra=["--weights", "0.3", "0.7"])[0]
    assert got == pytest.approx(100 * ens.miou, abs=0.005)
    # members that predict differently are refused, with both named
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(root / "advent" / "last.pth"),
                     str(root / "amp" / "last.pth"), "--device", "cpu"]) == 1
    line = _one_line_error(capsys)
    assert "run.align_corners" in line and str(root / "amp" / "last.pth") in line


def test_two_ensembles_write_two_files(trained, capsys):
    root, _ = trained
    a, b, c = (root / n / "last.pth" for n in ("advent", "minent", "amp"))
    written = []
    for checkpoints, extra in (((a, b), ()), ((a, b), ("--weights", "0.2", "0.8")),
                               ((a, b), ("--combine", "probs")), ((a,), ()),
                               ((a, b), ("--max-images", "2"))):
        written.append(_eval(capsys, *checkpoints, extra=extra)[1])
    assert len(set(written)) == len(written), written
    assert written[0].startswith("eval_advent-last+minent-last_") and "_w0.2-0.8_" in written[1]
    assert "_probs_" in written[2] and written[3] == f"eval_last_embedded_{IMAGES}img_19cls.md"
    # another member, or the same members in other folders: another file
    other = root.parent / "seed1"
    other.mkdir(exist_ok=True)
    (other / "minent").mkdir(exist_ok=True)
    (other / "minent" / "last.pth").write_bytes(b.read_bytes())
    for second in (c, other / "minent" / "last.pth"):
        capsys.readouterr()
        cli.main(["eval", "--checkpoint", str(a), str(second), "--max-images", str(IMAGES),
                  "--device", "cpu"])
        out, err = capsys.readouterr()
        written.append(Path(out.splitlines()[-1].split()[1]).name if not err else err)
    assert "run.align_corners" in written[5]  # amp's run predicts differently: refused
    assert written[6].startswith("eval_advent-last+minent-last_") and written[6] not in written[:5]


@pytest.mark.parametrize("weights, says", [
    (["-0.5", "-0.5"], "weights must be positive"),
    (["0", "0"], "weights must be positive"),
    (["0.5"], "2 model(s) but 1 weight(s)"),
])
def test_eval_refuses_wrong_weights_in_one_line(trained, capsys, weights, says):
    root, _ = trained
    before = set((root / "advent").glob("eval_*"))
    assert cli.main(["eval", "--checkpoint", str(root / "advent" / "last.pth"),
                     str(root / "minent" / "last.pth"), "--weights", *weights]) == 1
    line = _one_line_error(capsys)
    assert "--weights" in line and says in line
    assert set((root / "advent").glob("eval_*")) == before


def test_eval_on_a_folder_lists_its_checkpoints(trained, capsys, tmp_path):
    root, _ = trained
    assert cli.main(["eval", "--checkpoint", str(root / "minent")]) == 1
    line = _one_line_error(capsys)
    assert f"{root / 'minent'} is a folder, not a checkpoint file" in line
    assert "last.pth, iter_000002.pth" in line and f"--checkpoint {root / 'minent' / 'last.pth'}" in line
    assert cli.main(["eval", "--checkpoint", str(tmp_path)]) == 1
    assert "holds no checkpoint" in _one_line_error(capsys)


def test_eval_checks_the_output_folder_before_evaluating(trained, capsys, tmp_path, monkeypatch):
    root, _ = trained
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before the output folder was checked")

    monkeypatch.setattr(evaluate, "evaluate", no_evaluation)
    for out, says in ((blocker, "is a file, not a folder"), (blocker / "sub", "cannot write into")):
        assert cli.main(["eval", "--checkpoint", str(root / "minent" / "last.pth"), "--out",
                         str(out)]) == 1
        line = _one_line_error(capsys)
        assert f"output folder {out}" in line and says in line and "--out DIR" in line


def test_ledger_marks_an_unfinished_run(tmp_path, capsys):
    run_dir = tmp_path / "advent"
    sets = [x for k, v in {**TINY, "run.checkpoint_every": 1}.items()
            for x in ("--set", f"{k}={json.dumps(v)}")]
    assert cli.main(["train", "embedded/advent", "--run-dir", str(run_dir), *sets,
                     "--stop-at", "2"]) == 0
    capsys.readouterr()
    assert cli.main(["ledger", str(run_dir), "--max-images", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "**Unfinished runs** (seed 0: 2 of 3 updates)" in out
    assert "unfinished: 2 of 3 updates = official model_1)" in out
    table = pd.read_csv(tmp_path / ledger.TABLE_CSV)
    assert not table[table["row"] == "last"]["finished"].any()


def test_ledger_names_a_truncated_snapshot(trained, capsys, tmp_path):
    import shutil

    root, _ = trained
    run_dir = tmp_path / "minent"
    shutil.copytree(root / "minent", run_dir)
    snap = run_dir / "iter_000002.pth"
    snap.write_bytes(snap.read_bytes()[: snap.stat().st_size // 2])
    assert cli.main(["ledger", str(run_dir), "--device", "cpu", "--max-images", "2"]) == 1
    line = _one_line_error(capsys)
    assert f"{snap} is not a readable PyTorch checkpoint" in line
