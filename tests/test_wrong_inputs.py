"""Wrong inputs that gave a wrong number, overwrote a run, left a folder behind or ended in a
traceback: each is run as a user types it and gives the right result or one `error:` line
naming the input and the fix (exit 1), and nothing wrong is written."""

import pytest

from segda import cli, runs

TINY = ["--set", "data.source_size=[64, 32]", "--set", "data.target_size=[64, 32]",
        "--set", "data.batch_size=2", "--set", "run.device=cpu", "--set", "run.progress=false",
        "--set", "optim.early_stop=2", "--set", "run.eval_max_images=2"]


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _train(capsys, run_dir, *sets, preset="embedded/advent", extra=()):
    rc = cli.main(["train", preset, "--run-dir", str(run_dir), *TINY,
                   *[a for s in sets for a in ("--set", s)], *extra])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("setting, expected", [
    ("data.palette_shift=-100", "'data.palette_shift' must be in [0.0, 1.0], got -100.0"),
    ("data.light_shift=-100", "'data.light_shift' must be in [0.0, 1.0], got -100.0"),
    ("data.balance_shift=50", "'data.balance_shift' must be in [0.0, 1.0], got 50.0"),
    ("data.condition_shift=2", "'data.condition_shift' must be in [0.0, 1.0]"),
    ("data.class_confusion=-0.5", "'data.class_confusion' must be in [0.0, 1.0]"),
    ("data.embedded_seed=-1", "'data.embedded_seed' must be at least 0, got -1"),
    ("method.disc_patch_stride1=-1", "'method.disc_patch_stride1' must be in [0, 5], got -1"),
    ("model.num_classes=5", "'model.num_classes' is 5 but the labels of every dataset"),
    ("run.tensorboard=true", "run.tensorboard is true but the 'tensorboard' package"),
])
def test_a_setting_out_of_its_range_names_its_key_before_the_folder(capsys, tmp_path, setting,
                                                                    expected):
    import importlib.util

    if setting.startswith("run.tensorboard") and importlib.util.find_spec("tensorboard"):
        pytest.skip("tensorboard is installed here: the setting is valid")
    rc, out, err = _train(capsys, tmp_path / "run", setting)
    assert rc == 1 and expected in _one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_images_too_small_for_the_discriminator_name_the_size_and_the_fix(capsys, tmp_path):
    rc, out, err = _train(capsys, tmp_path / "run", "data.source_size=[4,4]",
                          "data.target_size=[4,4]")
    line = _one_line_error(err)
    assert rc == 1 and "'data.source_size' is [4, 4]" in line and "at least 32x32" in line
    rc, out, err = _train(capsys, tmp_path / "run", "method.disc_patch_stride1=2",
                          preset="embedded/feature_adv")
    assert rc == 1 and "has no output-space discriminator: set it to 0" in _one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_an_empty_preset_file_is_refused(capsys, tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("# nothing yet\n")
    rc, out, err = _train(capsys, tmp_path / "run", preset=str(preset))
    assert rc == 1 and f"preset file {preset} is empty" in _one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_a_failed_start_leaves_no_config_and_the_corrected_command_trains(capsys, tmp_path):
    """A start that fails on its starting weights writes no config.yaml; a config.yaml without
    a run beside it (what an older segda left) does not refuse the corrected command."""
    good = tmp_path / "good"
    assert _train(capsys, good)[0] == 0
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes((good / "last.pth").read_bytes()[:100])
    run_dir = tmp_path / "run"
    for wrong, expected in [
        (f"model.init_checkpoint={truncated}", "is not a readable PyTorch checkpoint"),
        (f"model.init_checkpoint={good / 'last.pth'}", "holds a segmenter of another architecture"),
    ]:
        rc, out, err = _train(capsys, run_dir, wrong, "model.multi_level=false",
                              "method.levels=single")
        assert rc == 1 and expected in _one_line_error(err)
        assert not (run_dir / "config.yaml").exists()
    line = _one_line_error(_train(capsys, run_dir, f"model.init_checkpoint={good / 'last.pth'}",
                                  "model.multi_level=false", "method.levels=single")[2])
    assert "model.multi_level=True" in line  # the keys to set, with the checkpoint's values
    # an older segda's leftover: config.yaml of another config, nothing else
    (run_dir / "config.yaml").write_text((good / "config.yaml").read_text().replace(
        "lr: 0.0", "lr: 0.5"))
    rc, out, err = _train(capsys, run_dir)
    assert rc == 0 and out.strip().splitlines()[-1].startswith("done: iteration 2")
    assert (run_dir / "config.yaml").read_text() == (good / "config.yaml").read_text()
    # a folder that holds a run still refuses another config
    rc, out, err = _train(capsys, run_dir, "optim.lr=0.001")
    assert rc == 1 and "holds a run with another config" in _one_line_error(err)
    assert runs.holds_run(run_dir) and not runs.holds_run(tmp_path / "nowhere")


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    """AdvEnt and MinEnt of seed 0, two iterations each, scored on 2 validation images."""
    root = tmp_path_factory.mktemp("runs")
    for row in ("advent", "minent"):
        assert cli.main(["train", f"embedded/{row}", "--run-dir", str(root / "seed0" / row),
                         *TINY]) == 0
    return root


def test_an_ensemble_never_overwrites_a_run_and_is_scored_on_its_members_images(
        seed_runs, capsys, tmp_path):
    import json
    import shutil

    root = tmp_path / "R"
    shutil.copytree(seed_runs, root)
    capsys.readouterr()
    advent = (root / "seed0" / "advent" / "metrics.json").read_bytes()
    argv = ["ensemble", "--members", "advent", "minent", "--run-root", str(root), "--seeds", "0"]
    for name, says in [("advent", "--name advent is a member of the table"),
                       ("source_only", "--name source_only is a trained row"),
                       ("", "--name '' is not a folder name"),
                       ("../x", "--name '../x' is not a folder name"),
                       ("..", "--name '..' is not a folder name")]:
        assert cli.main([*argv, "--name", name]) == 1
        assert says in _one_line_error(capsys.readouterr().err)
    (root / "seed0" / "mine").mkdir()
    shutil.copy(root / "seed0" / "advent" / "config.yaml", root / "seed0" / "mine")
    assert cli.main([*argv, "--name", "mine"]) == 1
    assert "holds a trained run" in _one_line_error(capsys.readouterr().err)
    assert (root / "seed0" / "advent" / "metrics.json").read_bytes() == advent
    assert not (root / "x").exists() and not (root / "seed0" / "mine" / "metrics.json").exists()
    # the ensemble's row is scored on the 2 images its members were, and the table says so
    assert cli.main(argv) == 0 and cli.main(argv) == 0  # an earlier ensemble is rewritten
    metrics = json.loads((root / "seed0" / "advent+minent" / "metrics.json").read_text())
    assert metrics["ensemble"]["max_images"] == 2
    capsys.readouterr()
    assert cli.main(["collect", str(root)]) == 0
    assert "Every row is scored on the first 2 validation images" in capsys.readouterr().out


def test_a_variant_name_is_one_plain_folder(seed_runs, capsys, tmp_path):
    for name in ("", "a/b", "..", "."):
        assert cli.main(["variant", "embedded/minent", "--name", name, "--run-root",
                         str(tmp_path / "R"), "--seeds", "0", *TINY]) == 1
        assert "is not a folder name" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "R").exists()


def test_an_empty_run_dir_is_refused(capsys, tmp_path, monkeypatch):
    from segda import notebook

    monkeypatch.chdir(tmp_path)
    rc, out, err = _train(capsys, "")
    assert rc == 1 and "--run-dir is empty" in _one_line_error(err)
    with pytest.raises(ValueError, match="parameter 'run_dir' is empty"):
        notebook.run_root("")
    assert list(tmp_path.iterdir()) == []


def test_a_retrain_clears_the_old_runs_evaluation_tables(seed_runs, capsys, tmp_path):
    import shutil

    run_dir = tmp_path / "advent"
    shutil.copytree(seed_runs / "seed0" / "advent", run_dir)
    assert cli.main(["eval", "--checkpoint", str(run_dir / "last.pth"), "--max-images", "1",
                     "--device", "cpu"]) == 0
    assert list(run_dir.glob("eval_last_*.md"))
    rc, out, err = _train(capsys, run_dir, extra=["--retrain"])
    assert rc == 0 and not list(run_dir.glob("eval_*")) and (run_dir / "metrics.json").exists()


def test_a_notebooks_update_check_that_fails_stops_the_notebook():
    """What notebook 05 prints after its written-out update: given a preset of another method
    (embedded/advent) the two states differ, and the check raises instead of printing False."""
    import torch

    from segda import config, notebook, step

    cfg = config.load("embedded/advent", {"data.batch_size": 2, "run.device": "cpu"})
    state, reference = (step.build_state(cfg, torch.device("cpu")) for _ in range(2))
    reference.seg.load_state_dict(state.seg.state_dict())
    for k in state.discs:
        reference.discs[k].load_state_dict(state.discs[k].state_dict())
    assert notebook.same_weights(state, reference, cfg) is True
    with torch.no_grad():
        next(reference.seg.parameters()).add_(1.0)
    with pytest.raises(notebook.UpdateMismatchError, match=r"of method 'advent' \(segmenter "
                                                           r".*run a preset of another method"):
        notebook.same_weights(state, reference, cfg)
