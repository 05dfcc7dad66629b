"""Wrong inputs that gave a wrong number, overwrote a run, left a folder behind or ended in a
traceback: each is run as a user types it and gives the right result or one `error:` line
naming the input and the fix (exit 1), and nothing wrong is written."""

from pathlib import Path

import pytest

from segda import checkout, cli, runs

REPO = Path(__file__).resolve().parents[1]

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
    assert metrics["eval_images"] == 2
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
    (tmp_path / "afile").write_text("x")  # papermill -p run_dir FILE
    with pytest.raises(runs.RunFileError, match=r"afile is a file, so the run folder .*afile/seed0/"
                                                r"minent cannot be made"):
        notebook.train_preset("embedded/minent", notebook.run_root(tmp_path / "afile"),
                              max_iters=1, image_size=[64, 32], batch_size=2, device="cpu")


def test_a_retrain_clears_the_old_runs_evaluation_tables(seed_runs, capsys, tmp_path):
    import shutil

    run_dir = tmp_path / "advent"
    shutil.copytree(seed_runs / "seed0" / "advent", run_dir)
    assert cli.main(["eval", "--checkpoint", str(run_dir / "last.pth"), "--max-images", "1",
                     "--device", "cpu"]) == 0
    assert list(run_dir.glob("eval_last_*.md"))
    rc, out, err = _train(capsys, run_dir, extra=["--retrain"])
    assert rc == 0 and not list(run_dir.glob("eval_*")) and (run_dir / "metrics.json").exists()


def test_a_notebooks_update_check_compares_every_tensor():
    """What a method notebook prints after its written-out update: True only when every tensor of
    the segmenter and the discriminators is bitwise equal. (A preset of another method stops
    at the notebook's setup cell first: tests/test_notebook_runs.py.)"""
    import torch

    from segda import config, notebook, step

    cfg = config.load("embedded/advent", {"data.batch_size": 2, "run.device": "cpu"})
    state, reference = (step.build_state(cfg, torch.device("cpu")) for _ in range(2))
    reference.seg.load_state_dict(state.seg.state_dict())
    for k in state.discs:
        reference.discs[k].load_state_dict(state.discs[k].state_dict())
    assert notebook.same_weights(state, reference) is True
    assert notebook.verify_update(state, reference) is True
    with torch.no_grad():
        next(reference.discs["main"].parameters()).add_(1e-7)
    assert notebook.same_weights(state, reference) is False
    assert notebook.differing_tensors(state, reference) == ["disc.main.0.weight"]
    # the notebooks' check stops the execution, naming the tensor
    with pytest.raises(notebook.UpdateMismatch, match=r"in 1 tensors \(disc\.main\.0\.weight\)"):
        notebook.verify_update(state, reference)


def test_every_method_notebook_stops_when_its_written_out_update_differs():
    """The cell after each method notebook's written-out update runs the check that raises
    (segda.notebook.verify_update), not the one that returns False."""
    import json

    notebooks = sorted((REPO / "notebooks").glob("0[2-6]_*.ipynb"))
    assert len(notebooks) == 5
    for path in notebooks:
        code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                if c["cell_type"] == "code"]
        train_step = [i for i, src in enumerate(code) if "segda.step.train_step(reference" in src]
        assert len(train_step) == 1, path.name
        assert "segda.notebook.verify_update(state, reference)" in code[train_step[0]], path.name
        assert not any("same_weights" in src for src in code), path.name


def test_ctrl_c_during_training_says_where_it_stopped_and_that_the_command_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "segda", "train", "embedded/source_only", "--run-dir",
            str(run_dir), *TINY, "--set", "optim.early_stop=100000", "--set",
            "optim.max_iters=100000", "--set", "run.checkpoint_every=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A test run from a background job inherits SIGINT ignored, and Python keeps an ignored
    # SIGINT ignored: give the child the default, which Python turns into KeyboardInterrupt.
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "last.pth").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()  # never leave a training process behind
    line = _one_line_error(err)
    assert proc.returncode == 1 and line.startswith("error: interrupted at iteration ")
    assert f"the same command resumes from {run_dir / 'last.pth'} (iteration " in line


def test_wrong_devices_folders_and_damaged_files_are_one_line(seed_runs, capsys, tmp_path,
                                                              monkeypatch):
    import errno
    import pathlib

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = seed_runs / "seed0" / "advent"
    for argv in (["eval", "--checkpoint", str(run / "last.pth"), "--device", "cuda"],
                 ["ledger", str(run), "--device", "cuda", "--out", str(tmp_path / "l")]):
        assert cli.main(argv) == 1
        line = _one_line_error(capsys.readouterr().err)
        assert "--device cuda but this machine has no CUDA device; set --device cpu" in line
    # a file where a folder above the run folder should be, a folder that cannot be made
    (tmp_path / "afile").write_text("x")
    rc, out, err = _train(capsys, tmp_path / "afile" / "seed0" / "advent")
    assert rc == 1 and f"{tmp_path / 'afile'} is a file, so the run folder" in _one_line_error(err)
    rc, out, err = _train(capsys, "/proc/segda_run")
    assert rc == 1 and "cannot create the run folder /proc/segda_run" in _one_line_error(err)
    # a truncated jobs.json: collect prints the table and names the file
    import shutil

    root = tmp_path / "R"
    shutil.copytree(seed_runs, root)
    (root / "jobs.json").write_text('{"executor": "local", "jo')
    assert cli.main(["collect", str(root)]) == 0
    assert f"{root / 'jobs.json'} is damaged" in capsys.readouterr().err
    # a read-only file system: train names the folder; collect prints the table it cannot write
    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    rc, out, err = _train(capsys, tmp_path / "ro" / "run")
    assert rc == 1 and "(Read-only file system)" in _one_line_error(err)
    assert cli.main(["demo", "--out", str(tmp_path / "ro" / "demo")]) == 1
    assert "Read-only file system" in _one_line_error(capsys.readouterr().err)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["ledger", str(run), "--device", "cpu", "--max-images", "1",
                     "--out", str(tmp_path / "ro" / "ledger")]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "Read-only file system" in line and "give a folder on a writable file system" in line
    from segda import io

    def no_write(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(io, "write_text_atomic", no_write)
    assert cli.main(["collect", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "| AdvEnt |" in out and "the table is printed only, not written" in err


def test_collect_of_runs_stopped_early_says_to_finish_them(capsys, tmp_path):
    rc, out, err = _train(capsys, tmp_path / "seed0" / "advent", extra=["--stop-at", "1"])
    assert rc == 0
    assert cli.main(["collect", str(tmp_path)]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "stopped before the end (--stop-at)" in line and "without --stop-at" in line


def test_suite_and_sweep_arguments_are_checked_before_any_work(capsys, tmp_path):
    def error(*argv):
        assert cli.main(list(argv)) == 1
        return _one_line_error(capsys.readouterr().err)

    out = str(tmp_path / "out")
    assert "--studies foo is not a study" in error("suite", "--run-root", out, "--seeds", "0",
                                                   "--studies", "foo")
    assert "'data.balance_shift' must be in" in error(
        "suite", "--run-root", out, "--seeds", "0", "--adapt-set", "data.balance_shift=5")
    assert "--seeds -1: a seed is at least 0" in error(
        "sweep", "--train", "--out", out, "--presets", "embedded/minent", "--seeds", "-1")
    assert "has no parameter 'max_iter'; did you mean max_iters?" in error(
        "sweep", "--notebook", str(checkout.NOTEBOOKS_DIR / "05_minent.ipynb"), "--out", out, "--presets",
        "embedded/minent", "-p", "max_iter=2")
    from segda import jobs

    planned = jobs.plan_train(out, ["embedded/minent"], [0, 0])  # a repeated seed runs once
    assert [j.seed for j in planned] == [0]
    assert not (tmp_path / "out").exists()


def test_training_progress_off_a_terminal_is_a_few_plain_lines(capsys, tmp_path):
    """What a SLURM log, `> log 2>&1` or an executed notebook (papermill's kernel: not a
    terminal; notebooks pass progress_bar="text") holds: one line every 50 iterations and
    one at the end, without carriage returns."""
    from segda import config, train

    cfg = config.load("embedded/source_only", {
        "data.source_size": [32, 16], "data.target_size": [32, 16], "data.batch_size": 1,
        "run.device": "cpu", "optim.early_stop": 60, "run.eval_max_images": 1})
    for style in ("text", None):  # None: run.progress's automatic choice
        train.fit(cfg, tmp_path / f"run_{style}", progress_bar=style)
        err = capsys.readouterr().err
        assert "\r" not in err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert [ln.split(",")[0] for ln in lines] == [
            f"run_{style}: iteration 50/60", f"run_{style}: iteration 60/60"], err
        assert " s, seg " in lines[-1]
    train.fit(cfg, tmp_path / "quiet", progress_bar="none")
    assert capsys.readouterr().err == ""


def test_unclear_messages_name_the_input_the_user_gave(seed_runs, capsys, tmp_path):
    from segda import config, notebook

    with pytest.raises(config.ConfigError, match=r"parameter 'max_iters' must be a whole number "
                                                 r"\(or None\), got 'abc'; pass it with papermill"):
        notebook.notebook_config("embedded/minent", max_iters="abc")  # papermill -p max_iters abc
    (tmp_path / "afile").write_text("x")
    assert cli.main(["doctor", "--dataset", "gta5", "--root", str(tmp_path / "afile")]) == 1
    out = capsys.readouterr().out
    assert "is a file, not a folder" in out and "download" not in out
    argv = ["doctor", "--dataset", "cityscapes", "--root", str(tmp_path)]
    with pytest.raises(SystemExit):
        cli.main([*argv, "--list", "val="])
    assert "--list val=: no file after '='" in capsys.readouterr().err
    cli.main([*argv, "--list", f"val={tmp_path}"])
    assert f"list file {tmp_path} is a folder; give the list file itself" in capsys.readouterr().out
    # ship has no --retrain: a folder of another run is refused with the way that exists
    assert cli.main(["ship", "--run-dir", str(seed_runs / "seed0" / "advent")]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "give ship another --run-dir" in line and "--retrain" not in line


def test_sweep_status_without_slurm_accounting_reads_the_queue_and_the_results(
        tmp_path, monkeypatch, capsys):
    """A cluster without slurmdbd: sacct fails, so the states come from squeue (queued,
    running) and submitit's result files (done, failed); a job in neither ended without one."""
    import os
    import pickle

    from segda import cluster

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\n"
                                   "exit 1\n")
    (bin_dir / "squeue").write_text("#!/bin/sh\necho '7_1|PENDING'\necho '7_2|RUNNING'\n")
    for tool in ("sacct", "squeue"):
        os.chmod(bin_dir / tool, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    out.mkdir()
    records = [cluster.JobRecord(f"job{i}", "train", str(out / f"r{i}"), job_id=f"7_{i}",
                                 stderr=str(out / f"{i}.err")) for i in range(4)]
    cluster.write_manifest(out, "slurm", records)
    done = out / cluster.FOLDER / "7_0"
    done.mkdir(parents=True)
    with (done / "7_0_0_result.pkl").open("wb") as f:
        pickle.dump(("success", {"run": "r0"}), f)
    assert cli.main(["sweep", "--status", str(out)]) == 1  # job 3 failed
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["job0: done (job 7_0)", "job1: queued (job 7_1)",
                         "job2: running (job 7_2)",
                         f"job3: failed (job 7_3): ended without a result (left SLURM's queue); "
                         f"log {out / '3.err'}"]
    assert lines[4] == "4 jobs: 1 done, 1 queued, 1 running, 1 failed"


def test_more_wrong_inputs_that_ran_silently_are_refused(seed_runs, capsys, tmp_path,
                                                         monkeypatch):
    """Found beside the cases above: each ran to exit 0 with an input that did nothing or gave
    a meaningless number, or wrote into the working folder."""
    def error(*argv):
        assert cli.main(list(argv)) == 1
        return _one_line_error(capsys.readouterr().err)

    monkeypatch.chdir(tmp_path)
    run = seed_runs / "seed0" / "advent"
    root = str(seed_runs)
    assert "'data.source_list' names the images of a real dataset" in _one_line_error(
        _train(capsys, tmp_path / "r", "data.source_list=mine.txt")[2])
    assert "'optim.momentum' must be in [0.0, 1.0], got 5.0" in _one_line_error(
        _train(capsys, tmp_path / "r", "optim.momentum=5")[2])
    assert f"--checkpoint names {run / 'last.pth'} twice" in error(
        "eval", "--checkpoint", str(run / "last.pth"), str(run / "last.pth"), "--max-images", "1")
    assert "--members advent advent names a run twice" in error(
        "ensemble", "--members", "advent", "advent", "--run-root", root, "--seeds", "0")
    for argv in (["ensemble", "--members", "advent", "minent", "--seeds", "0"],
                 ["suite", "--seeds", "0"], ["variant", "embedded/minent", "--name", "v"]):
        assert "--run-root is empty" in error(*argv, "--run-root", "")
    assert "--out is empty" in error("ledger", str(run), "--out", "")
    assert "--out is empty" in error("demo", "--out", "")
    assert "--set optim.lr: ledger takes data.* keys only" in error(
        "ledger", str(run), "--set", "optim.lr=1", "--out", str(tmp_path / "l"))
    assert "--readme nothere.md is not a file" in error("collect", root, "--readme", "nothere.md")
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing in the working folder


def test_negative_cluster_resources_are_refused_before_any_job(capsys, tmp_path):
    from segda import cluster

    argv = ["sweep", "--train", "--out", str(tmp_path / "out"), "--presets", "embedded/minent",
            "--executor", "local", "--gpus-per-job", "-1"]
    assert cli.main(argv) == 1
    assert "--gpus-per-job must be at least 0, got -1" in _one_line_error(capsys.readouterr().err)
    with pytest.raises(cluster.ClusterError, match=r"--cpus-per-job \(profile key cpus_per_job\) "
                                                   r"must be a whole number of at least 1, got 0"):
        cluster.SlurmOptions.from_profile(None, cpus_per_job=0)
    assert not (tmp_path / "out").exists()
