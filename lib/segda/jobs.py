"""The jobs an executor runs: a notebook execution (:class:`segda.notebooks_runner.SweepJob`) or
a training run (:class:`TrainJob`), and :class:`ResumableJob`, the one callable that runs either
one in a serial loop, a local process or a SLURM array task.

Nothing here imports submitit at module level: segda imports without it (``pip install -e
'.[cluster]'`` adds it), and only :meth:`ResumableJob.checkpoint`, which submitit calls inside a
job, needs it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segda.notebooks_runner import SweepJob, check_seeds, run_job


class JobError(RuntimeError):
    """A job that ran and failed: the message names what failed and where its log is."""


@dataclass(frozen=True)
class TrainJob:
    """One ``python -m segda train PRESET --run-dir RUN_DIR --set ...`` run. Plain values, so it
    pickles; ``gpus`` > 1 trains data-parallel over that many processes (``torchrun``)."""

    preset: str
    run_dir: str
    seed: int | None = None
    overrides: tuple[str, ...] = ()  # KEY=VALUE, as --set takes them
    gpus: int = 0

    @property
    def name(self) -> str:
        row = folder_name(self.preset)
        return row if self.seed is None else f"seed{self.seed}/{row}"

    def command(self) -> list[str]:
        sets = list(self.overrides) + ([] if self.seed is None else [f"run.seed={self.seed}"])
        train = ["-m", "segda", "train", self.preset, "--run-dir", self.run_dir]
        train += [word for s in sets for word in ("--set", s)]
        if self.gpus > 1:  # every rank joins the group from torchrun's environment (segda.distributed)
            return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={self.gpus}", *train]
        return [sys.executable, *train]


Job = SweepJob | TrainJob


def folder_name(preset: str) -> str:
    """A run's folder name: the preset's own name (``paper/advent``, a file ``my/advent.yaml``:
    ``advent``)."""
    return Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset.rsplit("/", 1)[-1]


def plan_train(out_root: str | Path, presets: Sequence[str], seeds: Sequence[int],
               overrides: Sequence[str] = (), gpus: int = 0) -> list[TrainJob]:
    """Every (preset, seed) training run of a sweep, into ``out_root/seed<k>/<row>`` (the
    README's layout), each preset and override checked before anything is submitted."""
    from segda import config, train

    out_root = Path(out_root).resolve()
    seeds = check_seeds(seeds)
    for preset in dict.fromkeys(presets):
        cfg = config.load(preset, config.parse_overrides(list(overrides)))  # ConfigError naming it
        train.check_settings(cfg)
    return [TrainJob(p, str(out_root / f"seed{s}" / folder_name(p)), s, tuple(overrides), gpus)
            for p in dict.fromkeys(presets) for s in seeds]


def expand_presets(presets: Sequence[str]) -> list[str]:
    """Preset names, a preset folder (``paper``) standing for every preset in it."""
    from segda import config

    every = config.list_presets()
    out: list[str] = []
    for name in presets:
        inside = [p for p in every if p.startswith(f"{name.rstrip('/')}/")]
        out += inside or [name]
    return list(dict.fromkeys(out))


def run_train(job: TrainJob) -> None:
    """Run the train command; its output goes to this process's (the job's log). A failure
    raises :class:`JobError` with the command's last ``error:`` line (or its last line)."""
    import collections
    import threading

    print(" ".join(job.command()), flush=True)
    proc = subprocess.Popen(job.command(), env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stderr=subprocess.PIPE, text=True, errors="replace")
    tail: collections.deque[str] = collections.deque(maxlen=50)

    def copy_stderr() -> None:  # to the log as it comes, keeping the last lines for the message
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.strip())

    copier = threading.Thread(target=copy_stderr, daemon=True)
    copier.start()
    code = proc.wait()
    copier.join()
    if code != 0:
        lines = [x for x in tail if x]
        errors = [x for x in lines if x.startswith("error: ")]
        why = (errors or lines or [""])[-1]
        raise JobError(f"{job.name}: {why} (python -m segda train exited with code {code})")


@dataclass(frozen=True)
class ResumableJob:
    """A job as submitit runs it: called, it runs its notebook or training run and returns when
    and where it ran. It is checkpointable in submitit's sense (what
    ``submitit.helpers.Checkpointable`` provides, without importing submitit here): on a timeout
    or a preemption submitit calls :meth:`checkpoint` and requeues the job, which then resumes
    from its run folder's ``last.pth`` as ``train`` and the notebooks always do."""

    job: Job

    @property
    def name(self) -> str:
        return self.job.name

    def __call__(self) -> dict:
        started = time.time()
        if isinstance(self.job, TrainJob):
            run_train(self.job)
        else:
            run_job(self.job)
        return {"name": self.name, "run_dir": self.job.run_dir, "started": started,
                "ended": time.time(), "host": socket.gethostname(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def checkpoint(self, *args, **kwargs):
        """The same job again: everything it needs to resume is in its run folder."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)
