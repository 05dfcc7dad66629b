"""Where a sweep's jobs run: ``serial`` (one after another in this process, the default),
``local`` (subprocesses on this machine, at most ``parallel`` at once, one GPU each when there
are GPUs) or ``slurm`` (one job array). Local and SLURM jobs go through submitit, whose folder
(pickles, logs) is ``OUT/.submitit``; ``OUT/jobs.json`` lists every job (name, id, run folder,
logs), from which :func:`job_states` reads done / queued / running / failed.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from segda import io
from segda.errors import UserError
from segda.jobs import ResumableJob, TrainJob

EXECUTORS = ("serial", "local", "slurm")
MANIFEST = "jobs.json"
FOLDER = ".submitit"
INSTALL = "pip install -e '.[cluster]'"

# sacct's states, as --status reports them (any other: failed).
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESIZING", "CONFIGURING"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


class ClusterError(ValueError, UserError):
    """An executor that cannot be used as asked (the message names the fix)."""


def require_submitit():
    """The submitit module, or one error line naming the command that installs it."""
    try:
        import submitit
    except ImportError:
        raise ClusterError(f"the local and slurm executors need submitit: {INSTALL}") from None
    return submitit


@dataclass(frozen=True)
class SlurmOptions:
    """What each array task asks SLURM for. ``time`` in minutes; ``setup``: shell lines run
    before the job (module loads, conda activation)."""

    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    time: int = 24 * 60
    array_parallelism: int = 256
    setup: tuple[str, ...] = ()

    @classmethod
    def from_profile(cls, path: str | Path | None, **given) -> SlurmOptions:
        """A YAML profile's values (keys as the fields), overridden by the options given."""
        import yaml

        values: dict = {}
        if path:
            path = Path(path)
            if not path.is_file():
                raise ClusterError(f"--slurm-profile {path} does not exist")
            values = yaml.safe_load(path.read_text()) or {}
            unknown = set(values) - {f.name for f in fields(cls)}
            if unknown:
                raise ClusterError(f"{path}: unknown keys {sorted(unknown)}; a profile holds "
                                   f"{', '.join(f.name for f in fields(cls))}")
        values.update({k: v for k, v in given.items() if v is not None and v != []})
        for key, least in (("gpus_per_job", 0), ("cpus_per_job", 1), ("array_parallelism", 1)):
            value = values.get(key)
            if value is not None and (not isinstance(value, int) or value < least):
                raise ClusterError(f"--{key.replace('_', '-')} (profile key {key}) must be a "
                                   f"whole number of at least {least}, got {value!r}")
        if "time" in values:
            values["time"] = minutes(values["time"])
        values["setup"] = tuple(values.get("setup", ()))
        return cls(**values)


def minutes(value: str | int) -> int:
    """A time limit in minutes, given as SLURM writes one: ``90`` (minutes), ``H:MM:SS``,
    ``D-HH`` or ``D-HH:MM:SS`` (seconds rounded up)."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-(\d+)(?::(\d+):(\d+))?|(\d+):(\d+):(\d+)|(\d+))", text)
    if not match:
        raise ClusterError(f"--time {value}: give minutes (90), H:MM:SS or D-HH:MM:SS")
    days, dh, dm, ds, hours, mins, secs, only = match.groups()
    if only is not None:
        return int(only)
    if days is not None:
        hours, mins, secs = dh, dm or 0, ds or 0
        return int(days) * 24 * 60 + int(hours) * 60 + int(mins) + (int(secs) > 0)
    return int(hours) * 60 + int(mins) + (int(secs) > 0)


@dataclass
class JobRecord:
    """One line of ``jobs.json``."""

    name: str
    kind: str  # "notebook" | "train"
    run_dir: str
    job_id: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    output: str | None = None  # the executed notebook
    ended: bool = False  # local jobs: the process has ended (with a result, or killed without)


def _record(job: ResumableJob) -> JobRecord:
    inner = job.job
    kind = "train" if isinstance(inner, TrainJob) else "notebook"
    output = None if kind == "train" else str(inner.output)
    return JobRecord(job.name, kind, inner.run_dir, output=output)


def write_manifest(out: Path, executor: str, records: Sequence[JobRecord]) -> Path:
    path = out / MANIFEST
    blob = {"executor": executor, "folder": str(out / FOLDER), "jobs": [asdict(r) for r in records]}
    io.write_text_atomic(path, json.dumps(blob, indent=1) + "\n")
    return path


def read_manifest(out: str | Path) -> tuple[str, list[JobRecord]]:
    path = Path(out) / MANIFEST
    if not path.exists():
        raise ClusterError(f"{path} does not exist: {out} holds no jobs submitted with "
                           "--executor local or slurm")
    try:
        blob = json.loads(path.read_text())
        return blob["executor"], [JobRecord(**r) for r in blob["jobs"]]
    except (ValueError, KeyError, TypeError) as err:  # truncated, or not a jobs file
        raise ClusterError(
            f"{path} is damaged ({type(err).__name__}: {err}); submit the sweep again to "
            "rewrite it (finished runs are reused), or delete it to collect without the "
            "jobs' states") from None


def _fill(record: JobRecord, job) -> None:
    record.job_id = str(job.job_id)
    record.stdout, record.stderr = str(job.paths.stdout), str(job.paths.stderr)


def submit_slurm(jobs: Sequence[ResumableJob], out: Path, options: SlurmOptions) -> list[JobRecord]:
    """Submit ``jobs`` as one SLURM job array; print each job's id and log; return at once."""
    submitit = require_submitit()
    executor = submitit.AutoExecutor(folder=str(out / FOLDER / "%j"), cluster="slurm")
    params = {"timeout_min": options.time, "cpus_per_task": options.cpus_per_job,
              "slurm_array_parallelism": options.array_parallelism, "slurm_job_name": out.name,
              "slurm_setup": list(options.setup)}
    if options.partition:
        params["slurm_partition"] = options.partition
    if options.gpus_per_job:
        params["gpus_per_node"] = options.gpus_per_job
    executor.update_parameters(**params)
    with executor.batch():
        submitted = [executor.submit(job) for job in jobs]
    records = [_record(job) for job in jobs]
    for record, job in zip(records, submitted, strict=True):
        _fill(record, job)
        print(f"submitted {record.name}: job {record.job_id}, log {record.stdout}", flush=True)
    write_manifest(out, "slurm", records)
    return records


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def run_local(jobs: Sequence[ResumableJob], out: Path, parallel: int, gpus_per_job: int = 1,
              poll_s: float = 0.2) -> list[JobRecord]:
    """Run ``jobs`` as subprocesses of this one, at most ``parallel`` at once; with GPUs, each
    gets ``gpus_per_job`` of its own (``CUDA_VISIBLE_DEVICES``). Returns when all have ended."""
    submitit = require_submitit()
    if parallel < 1:
        raise ClusterError(f"--parallel must be at least 1, got {parallel}")
    free = list(range(visible_gpus())) if gpus_per_job else []
    if free and gpus_per_job > len(free):
        raise ClusterError(f"--gpus-per-job {gpus_per_job}: this machine has {len(free)} GPU(s)")
    executor = submitit.LocalExecutor(folder=str(out / FOLDER / "%j"))
    records = [_record(job) for job in jobs]
    write_manifest(out, "local", records)
    waiting = list(zip(jobs, records, strict=True))
    running: list[tuple[object, JobRecord, list[int]]] = []  # submitit job, its record, its GPUs
    per_job = gpus_per_job if free else 0  # no GPU here: every job runs on the CPU
    while waiting or running:
        for entry in [r for r in running if r[0].done()]:
            running.remove(entry)
            free = sorted(free + entry[2])
            entry[1].ended = True
            write_manifest(out, "local", records)
        while waiting and len(running) < parallel and len(free) >= per_job:
            job, record = waiting.pop(0)
            gpus, free = free[:per_job], free[per_job:]
            executor.update_parameters(timeout_min=7 * 24 * 60, gpus_per_node=len(gpus),
                                       visible_gpus=gpus)
            started = executor.submit(job)
            _fill(record, started)
            running.append((started, record, gpus))
            where = f" on GPU {','.join(map(str, gpus))}" if gpus else ""
            print(f"started {record.name}{where}: job {record.job_id}, log {record.stdout}", flush=True)
            write_manifest(out, "local", records)
        time.sleep(poll_s)
    return records


def run_serial(jobs: Sequence[ResumableJob]) -> list[str]:
    """Run ``jobs`` one after another here; one line per failed job (the others still run)."""
    failures = []
    for job in jobs:
        try:
            job()
        except Exception as err:  # noqa: BLE001 - one job's failure must not stop the others
            failures.append(f"{job.name} failed: {str(err).splitlines()[0] if str(err) else err!r}")
            print(failures[-1], file=sys.stderr, flush=True)
    return failures


def _result(folder: Path, job_id: str) -> tuple[str, object] | None:
    """submitit's result pickle of a job: ("success", value) or ("error", traceback)."""
    path = folder / job_id / f"{job_id}_0_result.pkl"
    if not path.exists():
        return None
    with path.open("rb") as f:
        return pickle.load(f)


def sacct_states(job_ids: Sequence[str]) -> dict[str, str]:
    """The state SLURM's accounting holds for each job (array tasks as ``ID_INDEX``)."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    proc = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(arrays)])
    if proc.returncode != 0:  # a cluster without accounting (no slurmdbd)
        return squeue_states(job_ids, proc.stderr.strip())
    states = {}
    for line in proc.stdout.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id.strip()] = state.split()[0] if state.strip() else "UNKNOWN"
    return states


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:  # the command is not installed here
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: command not found")


def squeue_states(job_ids: Sequence[str], why: str = "") -> dict[str, str]:
    """The jobs' states without SLURM's accounting: those in the queue from ``squeue`` (one
    line per array task), the others ``ENDED``: :func:`job_states` reads submitit's result file
    first, so a job that ended without one failed (killed, out of memory, its time limit)."""
    proc = _run(["squeue", "-h", "-r", "-o", "%i|%T"])
    if proc.returncode != 0:
        raise ClusterError(f"sacct failed ({why}) and squeue too ({proc.stderr.strip()}): the "
                           "job states need SLURM's queue or its accounting (slurmdbd)")
    queue = dict(line.strip().split("|", 1) for line in proc.stdout.splitlines() if "|" in line)
    return {j: queue.get(j, "ENDED") for j in job_ids}


@dataclass(frozen=True)
class JobState:
    record: JobRecord
    state: str  # done | queued | running | failed
    detail: str = ""  # the failure's last line, SLURM's own state
    result: dict | None = None

    def line(self) -> str:
        rec = self.record
        where = f"job {rec.job_id}" if rec.job_id else "not started"
        text = f"{rec.name}: {self.state} ({where})"
        if self.state == "failed":
            logs = [rec.stderr] + ([rec.output] if rec.output else [])
            text += f": {self.detail}; log {' and '.join(str(p) for p in logs if p)}"
        return text


def job_states(out: str | Path) -> list[JobState]:
    """Every job of ``out/jobs.json`` with its state: from its result (done, failed), else from
    SLURM (queued, running, failed) or, for local jobs, from whether its log exists."""
    executor, records = read_manifest(out)
    folder = Path(out) / FOLDER
    slurm = sacct_states([r.job_id for r in records if r.job_id]) if executor == "slurm" else {}
    found = []
    for rec in records:
        result = _result(folder, rec.job_id) if rec.job_id else None
        if result is not None and result[0] == "success":
            found.append(JobState(rec, "done", result=result[1]))
        elif result is not None:
            lines = [x for x in str(result[1]).strip().splitlines() if x.strip()]
            found.append(JobState(rec, "failed", lines[-1] if lines else "error"))
        elif rec.job_id is None:
            found.append(JobState(rec, "queued"))
        elif executor == "slurm":
            state = slurm.get(rec.job_id, "PENDING")  # not in the accounting yet: just submitted
            kind = "queued" if state in QUEUED else "running" if state in RUNNING else "failed"
            found.append(JobState(rec, kind, "ended without a result (left SLURM's queue)"
                                  if state == "ENDED" else f"SLURM state {state}"))
        elif rec.ended:  # killed (out of memory, a signal) before it could write its result
            found.append(JobState(rec, "failed", "the process ended without a result"))
        else:
            found.append(JobState(rec, "running" if Path(rec.stdout or "").exists() else "queued"))
    return found


def wait(out: str | Path, poll_s: float = 2.0) -> list[JobState]:
    """Poll the jobs' states until none is queued or running."""
    while True:
        states = job_states(out)
        if not any(s.state in ("queued", "running") for s in states):
            return states
        time.sleep(poll_s)


def summary(states: Sequence[JobState]) -> str:
    counts = {k: sum(s.state == k for s in states) for k in ("done", "queued", "running", "failed")}
    jobs = f"{len(states)} job" + ("" if len(states) == 1 else "s")
    return f"{jobs}: " + ", ".join(f"{n} {k}" for k, n in counts.items())


# ------------------------------------------------------------------ a sweep run to its end


def run_jobs(planned: Sequence, out: Path, executor: str, *, parallel: int = 1,
             gpus_per_job: int | None = None, slurm: SlurmOptions | None = None,
             wait_for_slurm: bool = False, table: bool = True) -> int:
    """Run or submit ``planned`` jobs with ``executor`` (``gpus_per_job``: local default one
    when there are GPUs); once they end, report the failures and (a sweep: ``table``) the
    table of the runs under ``out`` (:func:`report_end`). SLURM jobs not waited for: one line
    saying where to follow them. Returns the exit code: 1 when a job failed."""
    if gpus_per_job is not None and gpus_per_job < 0:  # before any job starts
        raise ClusterError(f"--gpus-per-job must be at least 0, got {gpus_per_job}")
    runnable = [ResumableJob(j) for j in planned]
    if executor == "serial":
        return report_end(out, run_serial(runnable), len(planned), table)
    out.mkdir(parents=True, exist_ok=True)
    if executor == "local":
        run_local(runnable, out, parallel, gpus_per_job=1 if gpus_per_job is None else gpus_per_job)
    else:
        submit_slurm(runnable, out, slurm or SlurmOptions())
        if not wait_for_slurm:
            print(f"{len(planned)} jobs submitted; their states: python -m segda sweep --status {out}"
                  f"; the table once they finish: python -m segda collect {out}")
            return 0
        wait(out)
    states = job_states(out)
    if not table:
        print("\n".join(s.line() for s in states))
    failures = [s.line() for s in states if s.state == "failed"]
    return report_end(out, failures, len(planned), table)


def report_end(out: Path, failures: list[str], count: int, table: bool = True) -> int:
    """The table of the runs under ``out`` (``table``) and one line per failed job of
    ``count``; returns the exit code: 1 when a job failed."""
    from segda import results

    try:
        if table:
            print(results.write_results(out))
    except RuntimeError as err:  # every job failed
        print(err, file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {count} jobs failed:\n" + "\n".join(failures), file=sys.stderr)
    return 1 if failures else 0


def print_states(out: Path, wait_for_end: bool = False) -> int:
    """One line per submitted job: done, queued, running or failed (with its log), and their
    counts; returns the exit code: 1 when a job failed."""
    states = wait(out) if wait_for_end else job_states(out)
    for state in states:
        print(state.line())
    print(summary(states))
    return 1 if any(s.state == "failed" for s in states) else 0


def print_missing(run_root: Path) -> None:
    """The submitted jobs (``jobs.json``) whose runs are not in the table yet, and why."""
    if not (run_root / MANIFEST).exists():
        return
    try:
        missing = [s for s in job_states(run_root) if s.state != "done"]
    except ClusterError as err:  # e.g. collected where sacct does not answer
        print(f"the jobs of {run_root / MANIFEST} not checked: {err}", file=sys.stderr)
        return
    if missing:
        print(f"missing {len(missing)} job(s) of {run_root / MANIFEST}:\n"
              + "\n".join(s.line() for s in missing), file=sys.stderr)
