"""Faults a run folder must survive, each checked by what the user sees.

kill -9 at random moments (and mid-write) then resume equals an uninterrupted run, bitwise; a
full disk during a save; a pickle payload given to every loader; and every bad input of
docs/reliability.md: each names the file or key and the fix, and keeps what it should.
Small embedded model at 32x64, batch 2, a handful of iterations.
"""

import errno
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from segda import checkpointing, cli, config, evaluate, io, models, runs, step, train
from segda.data import registry

SMALL = {
    "data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
    "optim.max_iters": 10, "method.disc_ndf": 8, "run.device": "cpu", "run.progress": False,
    "run.log_every": 1, "run.eval_max_images": 4,
}


SO = {"method.name": "source_only"}  # the embedded/advent preset trained as source-only


def _cfg(preset="embedded/advent", iters=4, **extra):
    return config.load(preset, {**SMALL, "optim.early_stop": iters, **extra})


def _sets(cfg_overrides):
    """The command line's --set flags for a dict of overrides."""
    out = []
    for k, v in cfg_overrides.items():
        text = json.dumps(v) if isinstance(v, list | bool) else str(v)
        out += ["--set", f"{k}={text}"]
    return out


def _cli_train(capsys, preset, run_dir, iters=4, *extra, **overrides):
    """``python -m segda train`` in this process: (exit code, stdout, stderr)."""
    sets = _sets({**SMALL, "optim.early_stop": iters, **overrides})
    rc = cli.main(["train", preset, "--run-dir", str(run_dir), *sets, *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def small_data():
    cfg = _cfg()
    return registry.build_datasets(cfg.data, cfg.model)


# --------------------------------------------------------------------- kill -9, then resume

CHILD = """
import os, signal, sys
import torch
torch.set_num_threads(int(os.environ.get("SEGDA_TEST_THREADS", "1")))
from segda import config, train

run_dir, cfg_path, mode = sys.argv[1:4]
cfg = config.from_dict(config.parse_yaml(open(cfg_path).read()))
if mode.startswith("write:"):  # kill this process half-way through its k-th checkpoint write
    k, calls, real_save = int(mode.split(":")[1]), [0], torch.save

    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            import io
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
print("ready", flush=True)
train.fit(cfg, run_dir)
"""


def _start_child(tmp_path, run_dir, cfg, mode):
    script, cfg_path = tmp_path / "child.py", tmp_path / "child_config.yaml"
    script.write_text(CHILD)
    cfg_path.write_text(cfg.to_yaml())
    env = {**os.environ, "SEGDA_TEST_THREADS": str(torch.get_num_threads()), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(script), str(run_dir), str(cfg_path), mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    return child


def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, small_data):
    cfg = _cfg(iters=6, **{"run.checkpoint_every": 1})
    t0 = time.perf_counter()
    straight = train.fit(cfg, tmp_path / "straight", data=small_data)
    duration = time.perf_counter() - t0
    rng = random.Random(2024)
    trials = [f"after:{rng.uniform(0.05, 0.9) * duration:.3f}" for _ in range(3)] + ["write:3", "write:5"]
    interrupted = 0
    for n, mode in enumerate(trials):
        run_dir = tmp_path / f"trial{n}"
        child = _start_child(tmp_path, run_dir, cfg, mode)
        if mode.startswith("after:"):
            time.sleep(float(mode.split(":")[1]))
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=120)
        if child.returncode == -signal.SIGKILL and not (run_dir / "metrics.json").exists():
            interrupted += 1
        if mode.startswith("write:"):
            k = int(mode.split(":")[1])
            assert child.returncode == -signal.SIGKILL
            assert [p.name.startswith(".last.pth.") for p in run_dir.glob(".*.tmp")] == [True]
            assert checkpointing.load_run_checkpoint(run_dir / "last.pth")["iteration"] == k - 1
        resumed = train.fit(cfg, run_dir, data=small_data)
        assert _same_weights(straight.seg, resumed.seg), mode
        for level, d in straight.state.discs.items():
            assert _same_weights(d, resumed.state.discs[level]), mode
        assert resumed.state.history == straight.state.history, mode
        assert repr(resumed.state.evals) == repr(straight.state.evals), mode  # NaN IoUs
        assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp")), mode
    assert interrupted >= 2  # the two mid-write kills at least; the timed ones usually too


# ------------------------------------------------------------------------------ disk full


@pytest.fixture
def small_tmpfs(tmp_path):
    """A mount function for a tmpfs of a given size (root and CAP_SYS_ADMIN needed)."""
    mounted = []

    def mount(size: int) -> Path:
        where = tmp_path / "tmpfs"
        where.mkdir(exist_ok=True)
        opts = f"{'remount,' if mounted else ''}size={size}"
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    if mounted:
        subprocess.run(["umount", str(mounted[0])], check=False)


def test_disk_full_during_a_save_on_a_small_tmpfs(tmp_path, small_data, small_tmpfs, capsys):
    overrides = {"method.name": "source_only", "run.checkpoint_every": 1}
    cfg = _cfg(iters=3, **overrides)
    straight = train.fit(cfg, tmp_path / "straight", data=small_data)
    size = (tmp_path / "straight" / "last.pth").stat().st_size
    # Room for config.yaml and one checkpoint, not for a second one beside it (the atomic write
    # needs both while it runs).
    disk = small_tmpfs(int(1.6 * size) // 4096 * 4096)
    run_dir = disk / "run"
    rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 3, **overrides)
    assert rc == 1
    line = _one_line_error(err)
    assert f"no space left on device writing {run_dir / 'last.pth'}" in line
    assert "the previous last.pth is intact" in line and "rerun the same command" in line
    assert checkpointing.load_run_checkpoint(run_dir / "last.pth")["iteration"] == 1
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "config.yaml", "last.pth"]
    # More room (the fix the message gives), the same command: it resumes to the same result.
    small_tmpfs(4 * size)
    rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 3, **overrides)
    assert rc == 0, err
    assert _same_weights(straight.seg, train.load_run(run_dir).seg)


def test_disk_full_is_one_line_naming_the_file_and_space(tmp_path, small_data, monkeypatch, capsys):
    """Always on, beside the tmpfs test: a write that fails with ENOSPC."""
    overrides = {"method.name": "source_only", "run.checkpoint_every": 1}
    real_save = torch.save
    calls = []

    def full(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the third checkpoint: the disk is full
            f.write(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    run_dir = tmp_path / "run"
    rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 4, **overrides)
    assert rc == 1
    line = _one_line_error(err)
    need = sum(t.numel() * t.element_size() for t in train.load_run(run_dir).seg.state_dict().values())
    assert f"no space left on device writing {run_dir / 'last.pth'}" in line
    assert float(line.split("needs about ")[1].split(" MiB")[0]) >= need / 2**20 > 0
    assert f"MiB free in {run_dir}" in line
    assert "the previous last.pth is intact" in line
    assert checkpointing.load_run_checkpoint(run_dir / "last.pth")["iteration"] == 2
    assert not list(run_dir.glob(".*.tmp"))
    # A full disk when the run starts: no 0-byte config.yaml blocks the folder afterwards.
    monkeypatch.setattr(io, "write_atomic", _failing_write(io.write_atomic))
    with pytest.raises(io.DiskFullError, match="config.yaml"):
        train.fit(_cfg(iters=1), tmp_path / "fresh", data=small_data)
    assert not (tmp_path / "fresh" / "config.yaml").exists()


def _failing_write(real):
    def write(path, write_fn, size_hint=0):
        def partial(f):
            f.write(b"model:")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, partial, size_hint)
    return write


def test_orphan_temporaries_are_removed_at_the_next_start(tmp_path, small_data):
    cfg = _cfg(iters=2, **SO)
    run_dir = tmp_path / "run"
    train.fit(cfg, run_dir, data=small_data, stop_at=1)
    orphans = [run_dir / ".last.pth.k2x9_a.tmp", run_dir / ".metrics.json.0d1e.tmp"]
    for p in orphans:
        p.write_bytes(b"half a checkpoint")
    keep = run_dir / "notes.tmp"  # not a temporary of ours: not ours to delete
    keep.write_text("mine")
    train.fit(cfg, run_dir, data=small_data)
    assert not any(p.exists() for p in orphans) and keep.exists()


# ------------------------------------------------------------------ pickle payloads: refused


class _Payload:
    """Unpickling this creates ``marker``: the proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_files(tmp_path):
    marker = tmp_path / "EXECUTED"
    zipped = tmp_path / "zipped.pth"
    torch.save({"segmenter": _Payload(marker)}, zipped)  # the zip format torch.save writes
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps(_Payload(marker)))  # a bare pickle (torch's legacy format)
    return marker, [zipped, legacy]


def test_a_pickle_payload_executes_nowhere(tmp_path, small_data, capsys):
    marker, evil = _evil_files(tmp_path)
    cfg = _cfg(iters=1, **SO)
    for path in evil:
        # train resumes a folder whose last.pth is the payload
        run_dir = tmp_path / f"run_{path.stem}"
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        shutil.copy(path, run_dir / "last.pth")
        rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 1, **SO)
        assert rc == 1
        assert f"refused to load {run_dir / 'last.pth'}" in _one_line_error(err)
        with pytest.raises(checkpointing.CheckpointError, match=f"refused to load {run_dir}/last.pth"):
            train.load_run(run_dir)
        # a warm start from it
        warm = cfg.replace({"model.init_checkpoint": str(path)})
        with pytest.raises(checkpointing.CheckpointError,
                           match=f"refused to load {path}: .*open.*could run code"):
            train.fit(warm, None, data=small_data)
        # eval
        assert cli.main(["eval", "--checkpoint", str(path), "--max-images", "1"]) == 1
        assert f"refused to load {path}" in _one_line_error(capsys.readouterr().err)
        # the official-checkpoint loader
        seg = models.build_segmenter("small", 19, True, 4)
        with pytest.raises(pickle.UnpicklingError):
            models.load_checkpoint(seg, path)
    # YAML: a run's config.yaml, a preset file, a --set value
    tag = "!!python/object/apply:builtins.open [" + json.dumps(str(marker)) + ", w]"
    run_dir = tmp_path / "yaml_run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"model: {tag}\n")
    rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 1)
    assert rc == 1 and f"{run_dir / 'config.yaml'} is damaged" in _one_line_error(err)
    preset = tmp_path / "evil.yaml"
    preset.write_text(f"optim:\n  lr: {tag}\n")
    rc, out, err = _cli_train(capsys, str(preset), tmp_path / "p", 1)
    assert rc == 1 and f"preset {preset}: not valid YAML" in _one_line_error(err)
    rc = cli.main(["train", "embedded/advent", "--run-dir", str(tmp_path / "s"), "--set", f"optim.lr={tag}"])
    assert rc == 1 and "--set optim.lr=" in _one_line_error(capsys.readouterr().err)
    # the embedded-benchmark cache (an .npz with an object array) is ignored with a warning
    from segda.data import embedded_cache, synthetic

    cache = tmp_path / "cache"
    cache.mkdir()
    np.savez(embedded_cache.cache_path(cache, "target", "val"),
             config=np.array([_Payload(marker)], dtype=object))
    with pytest.warns(UserWarning, match="ignoring the embedded-benchmark cache"):
        assert embedded_cache.load_verified(cache, "target", "val", synthetic.SyntheticConfig()) is None
    assert not marker.exists()


# ----------------------------------------------- 1. a result is bound to the run that made it


class _Killed(BaseException):
    """Stands for kill -9 at a chosen line (nothing after it runs; no handler sees it)."""


def test_a_retrain_killed_after_its_config_leaves_no_stale_result(tmp_path, monkeypatch, capsys):
    old = {"run.checkpoint_every": 2}
    new = {**old, "optim.lr": "1e-4"}
    run_dir = tmp_path / "R"
    assert _cli_train(capsys, "embedded/advent", run_dir, 4, **old)[0] == 0
    real_write_config = runs.write_config

    def killed_after(run_dir_, cfg):
        real_write_config(run_dir_, cfg)
        raise _Killed

    monkeypatch.setattr(runs, "write_config", killed_after)
    with pytest.raises(_Killed):
        _cli_train(capsys, "embedded/advent", run_dir, 4, "--retrain", **new)
    monkeypatch.undo()
    capsys.readouterr()
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "last.pth").exists()
    assert runs.collect(tmp_path).empty  # collect reports no result for R
    rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 4, **new)
    assert rc == 0, err
    fresh = train.fit(_cfg(iters=4, **new), tmp_path / "fresh")
    expected = fresh.final_eval["target_miou"]
    assert f"done: iteration 4, target mIoU {100 * expected:.2f}" in out
    assert _same_weights(fresh.seg, train.load_run(run_dir).seg)
    table = runs.collect(run_dir)
    assert list(table["target_miou"]) == [100 * expected]


def test_a_retrain_killed_after_its_first_checkpoint_trains_on(tmp_path, monkeypatch, capsys):
    old = {"run.checkpoint_every": 2}
    new = {**old, "optim.lr": "1e-4"}
    run_dir = tmp_path / "R"
    assert _cli_train(capsys, "embedded/advent", run_dir, 4, **old)[0] == 0
    real_save = io.save_atomic

    def killed_after_first(obj, path):
        real_save(obj, path)
        raise _Killed

    monkeypatch.setattr(io, "save_atomic", killed_after_first)
    with pytest.raises(_Killed):
        _cli_train(capsys, "embedded/advent", run_dir, 4, "--retrain", **new)
    monkeypatch.undo()
    capsys.readouterr()
    for _ in range(2):  # every rerun reports the finished new run
        rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 4, **new)
        assert rc == 0, err
        assert "done: iteration 4, target mIoU" in out and "nan" not in out
    metrics = runs.read_metrics(run_dir)
    assert metrics["iteration"] == 4
    assert metrics["config_hash"] == runs.config_hash(_cfg(iters=4, **new))


def test_a_stale_metrics_file_is_not_a_result(tmp_path, small_data, capsys):
    """What an older segda could leave: metrics.json of one run beside the checkpoint and
    config.yaml of another. train resumes the run the folder holds; collect leaves it out."""
    cfg_a = _cfg(iters=4, **SO)
    cfg_b = cfg_a.replace({"optim.lr": 1e-4})
    train.fit(cfg_a, tmp_path / "a", data=small_data)
    train.fit(cfg_b, tmp_path / "R", data=small_data, stop_at=2)
    shutil.copy(tmp_path / "a" / "metrics.json", tmp_path / "R" / "metrics.json")
    assert not runs.is_complete(tmp_path / "R", cfg_b)
    with pytest.warns(UserWarning, match=f"{tmp_path / 'R' / 'metrics.json'} is left out: .*another config"):
        table = runs.collect(tmp_path)
    assert list(table["run"]) == ["a"]
    result = train.ensure_run(tmp_path / "R", cfg_b, data=small_data)
    assert result.state.iteration == 4
    straight = train.fit(cfg_b, tmp_path / "b", data=small_data)
    assert _same_weights(straight.seg, result.seg)
    assert repr(runs.read_metrics(tmp_path / "R")["evals"]) == repr(straight.state.evals)


# ------------------------------------------------------------ 2. the NaN stop, poisoned states


def test_the_nan_stop_never_writes_a_non_finite_state(tmp_path, capsys):
    run_dir = tmp_path / "N"
    rc, out, err = _cli_train(capsys, "embedded/source_only", run_dir, 6,
                              **{"optim.optimizer": "sgd", "optim.lr": 1000.0,
                                 "run.checkpoint_every": 1, "model.bn_mode": "train"})
    assert rc == 1
    line = _one_line_error(err)
    saved = checkpointing.load_run_checkpoint(run_dir / "last.pth")  # finite, or it would raise
    assert "non-finite values in the training state at iteration" in line
    assert f"{run_dir / 'last.pth'} (iteration {saved['iteration']}, every tensor finite)" in line
    assert "running_var" in line
    assert checkpointing.non_finite(saved["segmenter"]) == []


def test_a_poisoned_buffer_stops_the_run_before_it_is_saved(tmp_path, small_data, monkeypatch):
    cfg = _cfg(iters=6, **SO, **{"run.checkpoint_every": 2})
    real_step = step.train_step

    def poisoning_step(state, *args, **kwargs):
        out = real_step(state, *args, **kwargs)
        if state.iteration == 3:  # the loss stays finite; a batch-norm statistic does not
            next(b for n, b in state.seg.named_buffers() if n.endswith("running_var"))[0] = float("inf")
        return out

    monkeypatch.setattr(step, "train_step", poisoning_step)
    says = (r"iteration 4: 1 tensor\(s\) \(segmenter\.[\w.]*running_var\); .*"
            r"last.pth \(iteration 2, every tensor finite\) is kept untouched")
    with pytest.raises(checkpointing.NonFiniteStateError, match=says):
        train.fit(cfg, tmp_path / "run", data=small_data)
    assert checkpointing.load_run_checkpoint(tmp_path / "run" / "last.pth")["iteration"] == 2


def test_resume_and_eval_refuse_a_checkpoint_with_non_finite_tensors(tmp_path, small_data, capsys):
    cfg = _cfg(iters=2, **SO)
    run_dir = tmp_path / "run"
    train.fit(cfg, run_dir, data=small_data)
    blob = torch.load(run_dir / "last.pth", weights_only=True)
    poisoned = [k for k in blob["segmenter"] if k.endswith("running_var")][:2]
    for k in poisoned:
        blob["segmenter"][k][0] = float("nan")
    torch.save(blob, run_dir / "last.pth")
    expected = (f"{run_dir / 'last.pth'} holds 2 non-finite tensor(s) "
                f"(segmenter.{poisoned[0]}, segmenter.{poisoned[1]})")
    assert cli.main(["eval", "--checkpoint", str(run_dir / "last.pth"), "--max-images", "2"]) == 1
    assert expected in _one_line_error(capsys.readouterr().err)
    assert not list(run_dir.glob("eval_*"))
    with pytest.raises(checkpointing.CheckpointError, match="2 non-finite.*--retrain"):
        train.fit(cfg, run_dir, data=small_data)
    with pytest.raises(checkpointing.CheckpointError, match="starting from it"):
        train.fit(cfg.replace({"model.init_checkpoint": str(run_dir / "last.pth")}), None,
                  data=small_data)


# ---------------------------------------------------------- 3. fit checks the folder it resumes


def test_fit_refuses_to_mix_two_runs_in_one_folder(tmp_path, small_data):
    cfg = _cfg(iters=4, **SO, **{"optim.lr": 5e-4, "run.checkpoint_every": 2})
    run_dir = tmp_path / "R"
    train.fit(cfg, run_dir, data=small_data, stop_at=2)
    before = (run_dir / "last.pth").read_bytes()
    with pytest.raises(runs.ConfigMismatchError,
                       match=r"optim.lr: 0.0005 -> 0.0001.*retrain=True; command line: --retrain"):
        train.fit(cfg.replace({"optim.lr": 1e-4}), run_dir, data=small_data)
    assert (run_dir / "last.pth").read_bytes() == before
    advent = _cfg(iters=2)
    train.fit(advent, tmp_path / "A", data=small_data)
    files = {p.name: p.read_bytes() for p in (tmp_path / "A").iterdir() if p.name != ".lock"}
    with pytest.raises(runs.ConfigMismatchError, match=r"method.name: 'advent' -> 'source_only'.*--retrain"):
        train.fit(_cfg("embedded/source_only", iters=2), tmp_path / "A", data=small_data)
    assert {p.name: p.read_bytes() for p in (tmp_path / "A").iterdir() if p.name != ".lock"} == files


# -------------------------------------------------------------------- 4. one run per folder


def test_a_second_training_on_a_folder_fails_at_once_naming_the_holder(tmp_path, capsys):
    run_dir = tmp_path / "R"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom segda import runs\n"
         f"with runs.lock({str(run_dir)!r}):\n    print('held', flush=True)\n    time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        rc, out, err = _cli_train(capsys, "embedded/source_only", run_dir, 1)
        assert rc == 1 and time.perf_counter() - t0 < 30
        line = _one_line_error(err)
        assert f"{run_dir} is in use: another training process (pid {holder.pid})" in line
        assert not (run_dir / "config.yaml").exists()
        with pytest.raises(runs.RunLockedError, match=f"pid {holder.pid}"):
            train.fit(_cfg(iters=1), run_dir)
    finally:
        holder.send_signal(signal.SIGKILL)  # its death releases the lock
        holder.wait()
    rc, out, err = _cli_train(capsys, "embedded/source_only", run_dir, 1)
    assert rc == 0, err


# ------------------------------------------------------------------- 5. damaged run files


def test_damaged_run_files_are_named_with_the_fix(tmp_path, small_data, capsys):
    run_dir = tmp_path / "R"
    overrides = SO
    assert _cli_train(capsys, "embedded/advent", run_dir, 2, **overrides)[0] == 0
    good = runs.read_metrics(run_dir)
    # a truncated metrics.json: collect names it; train rewrites it from last.pth
    text = (run_dir / "metrics.json").read_text()
    (run_dir / "metrics.json").write_text(text[: len(text) // 2])
    assert cli.main(["collect", str(tmp_path)]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert f"{run_dir / 'metrics.json'} is damaged (not valid JSON" in line
    assert f"Rerun the train command on {run_dir}" in line
    with pytest.warns(UserWarning, match="metrics.json is damaged.*rewrites it"):
        rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 2, **overrides)
    assert rc == 0
    assert repr(runs.read_metrics(run_dir)["evals"]) == repr(good["evals"])
    # an empty config.yaml (what a full disk left before writes were atomic)
    (run_dir / "config.yaml").write_text("")
    rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 2, **overrides)
    assert rc == 1
    line = _one_line_error(err)
    assert f"{run_dir / 'config.yaml'} is empty" in line and "--retrain" in line
    rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 2, "--retrain", **overrides)
    assert rc == 0, err
    assert repr(runs.read_metrics(run_dir)["evals"]) == repr(good["evals"])


# ---------------------------------------------------------------- 7. unusable checkpoints


def test_unusable_checkpoints_are_named_with_what_they_should_be(tmp_path, small_data, capsys):
    cfg = _cfg(iters=2, **SO)
    other = tmp_path / "other"
    train.fit(_cfg(iters=2), other, data=small_data)  # an advent run
    cases = {
        "empty": (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        "text": (lambda p: p.write_text("not a checkpoint\n" * 20),
                 "is not a readable PyTorch checkpoint"),
        "state_dict": (lambda p: torch.save({"w": torch.zeros(2)}, p),
                       "is not a segda run checkpoint (it holds a dict with keys w)"),
        "other_method": (lambda p: shutil.copy(other / "last.pth", p),
                         "was written by a run of another config ("),
    }
    for name, (make, says) in cases.items():
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        make(run_dir / "last.pth")
        rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 2, **SO)
        assert rc == 1, name
        line = _one_line_error(err)
        assert f"{run_dir / 'last.pth'} {says}" in line, (name, line)
        if name == "other_method":
            assert "method.name: 'advent' -> 'source_only'" in line and "--retrain" in line
        else:  # eval: the file named (a bare state dict: with the keys that do not fit)
            assert cli.main(["eval", "--checkpoint", str(run_dir / "last.pth")]) == 1
            err = capsys.readouterr().err
            assert err.startswith("error: ") and f"{run_dir / 'last.pth'} " in err, err


# --------------------------------------------------------------------- 8. config values


def test_config_values(tmp_path, capsys):
    for value, expected in [("1e-4", 1e-4), ("1e6", 1e6), ("1.0e-4", 1e-4), ("2.5E-4", 2.5e-4),
                            ("3", 3.0), ("1_000.5", 1000.5)]:
        cfg = config.load("embedded/advent", config.parse_overrides([f"optim.lr={value}"]))
        assert cfg.optim.lr == expected
    bad = {
        "optim.max_iters=0": "'optim.max_iters' must be at least 1, got 0",
        "optim.max_iters=-5": "'optim.max_iters' must be at least 1, got -5",
        "data.batch_size=0": "'data.batch_size' must be at least 1, got 0",
        "optim.lr=-1e-4": "'optim.lr' must be at least 0.0, got -0.0001",
        "optim.lr_disc=-1": "'optim.lr_disc' must be at least 0.0",
        "method.lambda_adv_main=-0.001": "'method.lambda_adv_main' must be at least 0.0",
        "method.lambda_ent_aux=-1": "'method.lambda_ent_aux' must be at least 0.0",
        "optim.lr=nan": "'optim.lr' must be a finite number",
        "optim.lr=fast": "'optim.lr' must be a number, got 'fast'",
        "optim.lr=[1e-4": "--set optim.lr=[1e-4: not valid YAML",
        "method.levels={a: b": "--set method.levels={a: b: not valid YAML",
    }
    for item, says in bad.items():
        rc = cli.main(["train", "embedded/advent", "--run-dir", str(tmp_path / "r"), "--set", item])
        assert rc == 1, item
        assert says in _one_line_error(capsys.readouterr().err), item
    assert not (tmp_path / "r").exists()
    # the refusal that suggests retrain=True names the command-line flag too
    run_dir = tmp_path / "R"  # a run of one iteration (a config.yaml alone binds nothing)
    assert _cli_train(capsys, "embedded/advent", run_dir, 1, "--stop-at", "1")[0] == 0
    rc, out, err = _cli_train(capsys, "embedded/advent", run_dir, 1, **{"optim.lr": "1e-3"})
    line = _one_line_error(err)
    assert rc == 1 and f"optim.lr: {_cfg(iters=1).optim.lr!r} -> 0.001" in line
    assert "retrain=True" in line and "--retrain" in line


# ---------------------------------------------------------------------- 9. evaluation


def test_empty_or_mismatched_evaluations_are_errors(tmp_path, small_data, capsys):
    cfg = _cfg(iters=1, **SO)
    train.fit(cfg, tmp_path / "run", data=small_data)
    ckpt = tmp_path / "run" / "last.pth"
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--max-images", "0"]) == 1
    assert "--max-images must be at least 1" in _one_line_error(capsys.readouterr().err)
    assert not list((tmp_path / "run").glob("eval_*"))
    # a 10-class model on 19-class labels
    seg10 = models.build_segmenter("small", 10, True, 4)
    top = max(int(torch.as_tensor(small_data.val_target[i]["label"]).masked_fill(
        torch.as_tensor(small_data.val_target[i]["label"]) == 255, 0).max()) for i in range(4))
    assert top >= 10
    with pytest.raises(evaluate.EvaluationError, match=rf"class ids outside 0..9 \(up to {top}\)"):
        evaluate.evaluate(seg10, small_data.val_target, device="cpu", num_classes=10, max_images=4)
    with pytest.raises(evaluate.EvaluationError, match="predicts 10 classes but num_classes is 19"):
        evaluate.evaluate(seg10, small_data.val_target, device="cpu", num_classes=19, max_images=4)
    with pytest.raises(evaluate.EvaluationError, match="max_images must be at least 1"):
        evaluate.evaluate(seg10, small_data.val_target, device="cpu", max_images=0)
    # the eval command on a 10-class run
    cfg10 = cfg.replace({"model.num_classes": 10})
    state = step.build_state(cfg10, torch.device("cpu"))
    run10 = tmp_path / "run10" / "last.pth"
    io.save_atomic(checkpointing.run_state(state, cfg10), run10)
    assert cli.main(["eval", "--checkpoint", str(run10), "--max-images", "2"]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert f"{run10} holds a model of 10 classes" in line and "19-class model" in line
