"""Sweeps and training runs on a real SLURM cluster and as local processes
(``--executor slurm|local``, docs/cluster.md), at tiny length on the embedded benchmark:

* a 2 presets x 2 seeds notebook sweep submitted as a job array equals the serial sweep bit for
  bit (every run's weights, optimizer states and evaluations);
* a job preempted half-way (the signal SLURM sends before a preemption or a time limit) is
  requeued and resumes from its ``last.pth``; its final weights equal an uninterrupted run's;
* a job of a preset that cannot train fails, its log named by ``sweep --status`` and
  ``collect``, while the other three finish;
* ``--executor local --parallel 2`` never runs more than two jobs at once (the jobs' own start
  and end times) and equals the train command run serially;
* the README's cluster block runs as written on the miniature datasets;
* without submitit, ``--executor slurm`` is one error line naming the install command.

The SLURM tests need a cluster: ``bash scripts/local_slurm.sh`` starts a single-node one on this
machine (``.ci/run`` does, and sets ``SEGDA_REQUIRE_SLURM=1`` so that a cluster that did not
come up fails these tests instead of skipping them).
"""

# ruff: noqa: E501  (the README's command lines, verbatim)
from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segda import cli, cluster, runs
from test_reproduce import CLUSTER, _bash, _lists
from test_sweep import TINY

REPO = Path(__file__).resolve().parents[1]
# Tiny training runs (the train command's --set), as tests/test_sweep.py's.
TINY_TRAIN = ["data.source_size=[64,32]", "data.target_size=[64,32]", "data.batch_size=2",
              "run.eval_max_images=2", "run.device=cpu", "run.progress=false", "optim.early_stop=2"]
DEADLINE_S = 300  # no job of these tests takes a minute; a stuck cluster fails, not hangs


def _unavailable() -> str | None:
    """Why the SLURM tests cannot run here (None: they can)."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not found); start one with: sudo bash scripts/local_slurm.sh"
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if proc.returncode != 0 or not {"idle", "mix", "alloc"} & set(proc.stdout.split()):
        return (f"SLURM has no node up (sinfo: {(proc.stdout + proc.stderr).strip() or 'nothing'}); "
                "start one with: sudo bash scripts/local_slurm.sh")
    if subprocess.run(["sacct", "-n", "-X"], capture_output=True).returncode != 0:
        return "SLURM runs without accounting (sacct fails): scripts/local_slurm.sh starts slurmdbd"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return f"submitit is not installed: {cluster.INSTALL}"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = _unavailable()
    if reason and os.environ.get("SEGDA_REQUIRE_SLURM") == "1":
        pytest.fail(f"SEGDA_REQUIRE_SLURM=1 but {reason}")
    if reason:
        pytest.skip(reason)


def _sets(values: list[str]) -> list[str]:
    return [w for v in values for w in ("--set", v)]


def _tensors(blob, prefix=""):
    """Every tensor and number of a checkpoint, by its path in the blob."""
    if isinstance(blob, dict):
        for k, v in blob.items():
            yield from _tensors(v, f"{prefix}/{k}")
    elif isinstance(blob, (list, tuple)):
        for i, v in enumerate(blob):
            yield from _tensors(v, f"{prefix}/{i}")
    elif isinstance(blob, (torch.Tensor, int, float)):
        yield prefix, blob


def _train_as_a_job_does(preset: str, run_dir: Path, sets: list[str]) -> None:
    """The reference run of a comparison, as its own ``python -m segda train`` process with this
    process's environment, as the jobs get it: the same thread count (make test exports
    OMP_NUM_THREADS=2, while conftest.py runs this process on one thread), hence the same
    floating-point results."""
    proc = subprocess.run([sys.executable, "-m", "segda", "train", preset, "--run-dir", str(run_dir),
                           *_sets(sets)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same training: every weight and optimizer state bit for bit,
    the same iteration and evaluations."""
    keys = ("segmenter", "discriminators", "opt_seg", "opt_discs", "iteration")
    blobs = [torch.load(p / runs.CHECKPOINT, map_location="cpu", weights_only=False) for p in (a, b)]
    left, right = ({k: v for k, v in _tensors({k: blob[k] for k in keys})} for blob in blobs)
    assert left.keys() == right.keys()
    for k in left:
        same = torch.equal(left[k], right[k]) if isinstance(left[k], torch.Tensor) else left[k] == right[k]
        assert same, f"{a} and {b} differ at {k}"
    assert runs.read_metrics(a)["evals"] == runs.read_metrics(b)["evals"]


def _results(out: Path) -> dict[str, dict]:
    """Every job's own record (start and end times), from submitit's result pickles."""
    found = {}
    for path in (out / cluster.FOLDER).glob("*/*_result.pkl"):
        status, value = pickle.loads(path.read_bytes())
        if status == "success":
            found[value["name"]] = value
    return found


def _wait_for(condition, what: str, timeout_s: float = DEADLINE_S, poll_s: float = 0.1):
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"{what} within {timeout_s} s")


def test_without_submitit_the_slurm_executor_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    argv = ["sweep", "--train", "--presets", "embedded/advent", "--out", str(tmp_path), "--executor", "slurm"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the local and slurm executors need submitit: pip install -e '.[cluster]'"]
    assert not any(tmp_path.iterdir())


def test_a_slurm_profile_and_the_options_that_override_it(tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text("partition: gpu\ngpus_per_job: 1\ncpus_per_job: 8\ntime: '1-00:00:00'\n"
                       "setup:\n  - module load cuda\n")
    options = cluster.SlurmOptions.from_profile(profile, cpus_per_job=4, time=None, setup=[])
    assert options == cluster.SlurmOptions("gpu", 1, 4, 24 * 60, 256, ("module load cuda",))
    assert [cluster.minutes(t) for t in ("90", "4:00:00", "2-00:00:00", "1-12", "0:00:30")] == \
        [90, 240, 2880, 2160, 1]
    profile.write_text("partitions: gpu\n")
    with pytest.raises(cluster.ClusterError, match="unknown keys"):
        cluster.SlurmOptions.from_profile(profile)
    with pytest.raises(cluster.ClusterError, match="--time 2 days"):
        cluster.minutes("2 days")


def test_a_notebook_sweep_on_slurm_equals_the_serial_sweep(slurm, readme_sweep, tmp_path, capsys):
    serial_out, argv, rc = readme_sweep  # docs/notebooks.md's sweep, serial, seeds 0 1 2
    assert rc == 0
    presets = argv[argv.index("--presets") + 1:argv.index("--seeds")]
    assert len(presets) == 2
    out = tmp_path / "sweep"
    sweep = ["sweep", "--notebook", argv[argv.index("--notebook") + 1], "--out", str(out),
             "--presets", *presets, "--seeds", "0", "1", *TINY, "--executor", "slurm", "--wait"]
    assert cli.main(sweep) == 0
    printed = capsys.readouterr().out
    assert printed.count("submitted ") == 4 and "| AdvEnt |" in printed
    states = cluster.job_states(out)
    assert [s.state for s in states] == ["done"] * 4
    assert len({s.record.job_id.split("_")[0] for s in states}) == 1  # one job array
    checked = 0
    for run in sorted(p.parent for p in out.rglob(runs.CHECKPOINT)):
        assert_same_run(run, serial_out / run.relative_to(out))
        checked += 1
    assert checked >= 4


def test_a_preempted_job_is_requeued_and_ends_as_an_uninterrupted_run(slurm, tmp_path):
    sets = [s for s in TINY_TRAIN if not s.startswith("optim.early_stop")]
    sets += ["optim.early_stop=24", "run.checkpoint_every=2"]
    run_dir = tmp_path / "preempted"
    assert cli.main(["train", "embedded/advent", "--run-dir", str(run_dir), *_sets(sets),
                     "--executor", "slurm"]) == 0
    [record] = cluster.read_manifest(run_dir)[1]
    _wait_for(lambda: (run_dir / runs.CHECKPOINT).exists(), "the job's first checkpoint")
    # Stopped (SIGSTOP) half-way, so that the test knows where: between checkpoints, not finished.
    subprocess.run(["scancel", "--signal=STOP", record.job_id], check=True)
    assert not (run_dir / runs.METRICS).exists()
    stopped_at = torch.load(run_dir / runs.CHECKPOINT, map_location="cpu", weights_only=False)["iteration"]
    assert 0 < stopped_at < 24
    # What SLURM sends before a preemption or the time limit (submitit asks for it with
    # --signal), delivered as the job continues: submitit's handler checkpoints the job and
    # requeues it.
    subprocess.run(["scancel", "--signal=USR2", record.job_id], check=True)
    subprocess.run(["scancel", "--signal=CONT", record.job_id], check=True)

    def requeued() -> bool:
        shown = subprocess.run(["scontrol", "show", "job", record.job_id], capture_output=True,
                               text=True).stdout
        return all(f in shown for f in ("Restarts=1", "JobState=PENDING", "Reason=BeginTime"))

    _wait_for(requeued, "the job's requeue")
    assert not (run_dir / runs.METRICS).exists()
    # SLURM holds a requeued job back for two minutes; let it start now, but not within the
    # second its old credential was revoked in (slurmd refuses the job then: "Job credential
    # revoked", compared at one-second resolution).
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"jobid={record.job_id}", "StartTime=now"], check=True)
    states = cluster.wait(run_dir, poll_s=0.5)
    assert [s.state for s in states] == ["done"]
    log = Path(record.stdout).read_text()
    assert log.count("Starting with JobEnvironment") == 2  # ran twice
    assert "done: iteration 24" in log
    whole = tmp_path / "uninterrupted"
    _train_as_a_job_does("embedded/advent", whole, sets)
    assert_same_run(run_dir, whole)


def test_a_failed_job_is_named_by_status_and_collect_and_the_others_finish(slurm, tmp_path, capsys):
    # A preset that loads, then cannot train: its init file does not exist.
    bad = tmp_path / "missing_init.yaml"
    text = (REPO / "lib/segda/presets/embedded/minent.yaml").read_text()
    bad.write_text(text.replace('init_checkpoint: "shipped:embedded_source_pretrain"',
                                f'init_checkpoint: "{tmp_path / "no_such_init.pth"}"'))
    assert "no_such_init.pth" in bad.read_text()
    out = tmp_path / "sweep"
    argv = ["sweep", "--train", "--presets", "embedded/advent", "embedded/minent",
            "embedded/source_only", str(bad), "--seeds", "0", "--out", str(out), *_sets(TINY_TRAIN),
            "--executor", "slurm", "--slurm-setup", "echo the setup line ran"]
    assert cli.main(argv) == 0  # submitted
    capsys.readouterr()
    assert cli.main(["sweep", "--status", str(out), "--wait"]) == 1
    status = capsys.readouterr().out.splitlines()
    failed = [line for line in status if ": failed " in line]
    assert len(failed) == 1 and failed[0].startswith("seed0/missing_init: failed (job ")
    [record] = [r for r in cluster.read_manifest(out)[1] if r.name == "seed0/missing_init"]
    assert failed[0].endswith(f"log {record.stderr}")
    assert "error: init checkpoint not found: " in failed[0]  # the train command's own error line
    assert "error: init checkpoint not found: " in Path(record.stderr).read_text()
    assert status[-1] == "4 jobs: 3 done, 0 queued, 0 running, 1 failed"
    assert "the setup line ran" in Path(record.stdout).read_text()
    assert cli.main(["collect", str(out)]) == 0
    captured = capsys.readouterr()
    for label in ("| AdvEnt |", "| MinEnt |", "| source-only (control) |"):
        assert label in captured.out
    assert captured.err.splitlines() == [f"missing 1 job(s) of {out / cluster.MANIFEST}:", failed[0]]


def test_local_jobs_run_at_most_parallel_at_once_and_equal_serial(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    # As on a machine with two GPUs: each job is given one (the training runs on the CPU).
    monkeypatch.setattr(cluster, "visible_gpus", lambda: 2)
    out = tmp_path / "local"
    presets = ["embedded/advent", "embedded/minent", "embedded/source_only"]
    argv = ["sweep", "--train", "--presets", *presets, "--seeds", "0", "--out", str(out),
            *_sets(TINY_TRAIN), "--executor", "local", "--parallel", "2"]
    assert cli.main(argv) == 0
    assert [s.state for s in cluster.job_states(out)] == ["done"] * 3
    done = list(_results(out).values())
    spans = [(r["started"], r["ended"]) for r in done]
    assert len(spans) == 3
    # the most jobs running at any one time: at each start, those started and not yet ended
    at_once = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert at_once == 2
    # one GPU each, and two jobs running together never share one
    assert {r["cuda_visible_devices"] for r in done} == {"0", "1"}
    for a in done:
        for b in done:
            if a is not b and a["started"] <= b["started"] < a["ended"]:
                assert a["cuda_visible_devices"] != b["cuda_visible_devices"]
    for preset in presets:
        row = preset.split("/")[1]
        serial = tmp_path / "serial" / row
        _train_as_a_job_does(preset, serial, [*TINY_TRAIN, "run.seed=0"])
        assert_same_run(out / "seed0" / row, serial)


def test_a_train_job_with_several_gpus_trains_data_parallel(tmp_path, capsys):
    # Two ranks through torchrun's environment; without GPUs they run on the CPU (gloo).
    out = tmp_path / "ddp"
    argv = ["sweep", "--train", "--presets", "embedded/advent", "--out", str(out),
            *_sets(TINY_TRAIN), "--gpus-per-job", "2"]
    assert cli.main(argv) == 0
    blob = torch.load(out / "seed0/advent" / runs.CHECKPOINT, map_location="cpu", weights_only=False)
    assert blob["world_size"] == 2 and blob["iteration"] == 2


def _cluster_additions(line: str, data: Path) -> str:
    """The README's cluster line with this test's additions appended: one row and one seed (every
    row trains in tests/test_reproduce.py) at tiny size on the CPU with the miniature's lists, the
    test cluster's partition, no GPU."""
    words = shlex.split(line)
    if words[:4] == ["python", "-m", "segda", "sweep"] and "--executor" in words:
        sets = [*(s for s in TINY_TRAIN if s != "run.progress=false"),
                *(f"{k}={v}" for k, v in _lists("gta5_cityscapes", data).items())]
        return (f"{line} --presets paper/advent --seeds 0 --slurm-partition debug "
                f"--gpus-per-job 0 --cpus-per-job 1 " + " ".join(f"--set {shlex.quote(s)}" for s in sets))
    if words[:4] == ["python", "-m", "segda", "ledger"]:
        return f"{line} --max-images 2 --device cpu"
    return line


@pytest.mark.slow
def test_the_readme_cluster_block_runs_on_the_miniature_datasets(slurm, workspace, tmp_path):
    # Its own folder beside the reproduction test's, with the data, weights and notebooks it reads.
    for name in ("data", "weights", "notebooks"):
        (tmp_path / name).symlink_to(workspace / name)
    out = _bash([_cluster_additions(line, workspace / "data") for line in CLUSTER], tmp_path)
    root = tmp_path / "runs" / "cluster"
    assert "1 job: 1 done, 0 queued, 0 running, 0 failed" in out
    trained = {p.parent.relative_to(root).as_posix() for p in root.rglob(runs.CHECKPOINT)}
    assert trained == {"seed0/advent"}
    assert "| AdvEnt |" in (root / "results.md").read_text()
    assert "### AdvEnt (advent)" in out  # the ledger's table of the run
    manifest = json.loads((root / cluster.MANIFEST).read_text())
    assert manifest["executor"] == "slurm" and [j["name"] for j in manifest["jobs"]] == ["seed0/advent"]
