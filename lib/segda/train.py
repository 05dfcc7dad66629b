"""The fit loop: iterations, logging, evaluation cadence, checkpoints, the NaN stop.

A fit is three steps: restore (the run folder prepared, the state built, resumed from
``last.pth`` or warm-started), the loop (steps, the loss log, evaluations and checkpoints at
their cadence) and finish (the final evaluation, checkpoint and summaries). The step itself is
:func:`segda.step.train_step` (the same for every method); the loss log, TensorBoard and the
progress bar are :class:`segda.trainlog.TrainLog`; the checkpoint's format and its save (one
call, :func:`segda.checkpointing.save`) are :mod:`segda.checkpointing`'s; the run folder's
other files are written by :mod:`segda.runs`. :func:`ensure_run` trains a run unless a
finished run of the same config is already there, which is how notebooks and experiments
share runs.

A training process holds its run folder's lock (:func:`segda.runs.lock`; in a data-parallel run,
rank 0 holds it), resumes only a checkpoint of the same config, and never writes a checkpoint
whose tensors are not all finite, so ``last.pth`` is always a state worth resuming.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segda import checkpointing, evaluate, methods, repro, runs, step
from segda.config import ConfigError, TrainConfig
from segda.data import loaders, registry
from segda.labels import NUM_CLASSES
from segda.train_state import TrainState
from segda.trainlog import TrainLog


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT) during training; the message says the iteration and what resumes."""


@dataclass
class RunResult:
    """What :func:`fit` returns: the trained modules, loss history and evaluations."""

    state: TrainState
    config: TrainConfig
    run_dir: Path | None
    wall_time_s: float

    @property
    def seg(self) -> nn.Module:
        return self.state.seg

    def history_frame(self):
        import pandas as pd

        return pd.DataFrame(self.state.history)

    @property
    def final_eval(self) -> dict[str, Any] | None:
        return self.state.evals[-1] if self.state.evals else None


@dataclass
class _Fitting:
    """One fit in progress: what the restore step builds and the loop and finish steps use."""

    cfg: TrainConfig
    run_dir: Path | None
    data: Any
    state: TrainState
    device: torch.device
    started: float  # time.perf_counter() when this process began the fit
    saved_at: int | None = None  # the iteration last.pth holds
    wall_before: float = 0.0  # the training time of the processes that resumed before this one

    @property
    def main(self) -> bool:
        return self.state.dist is None or self.state.dist.is_main

    def kept(self) -> str:
        """What a stopped run leaves: its last checkpoint (every tensor finite), or none."""
        if self.run_dir is None or self.saved_at is None:
            return "no checkpoint was written"
        return (f"{self.run_dir / runs.CHECKPOINT} (iteration {self.saved_at}, every tensor "
                "finite) is kept untouched")

    def interrupted(self) -> str:
        """What a Ctrl-C during the loop leaves, in one line with the way on."""
        where = f"interrupted at iteration {self.state.iteration}"
        if self.run_dir is None:
            return f"{where} (no run folder: nothing is kept)"
        if self.saved_at is None:
            return (f"{where}; no checkpoint was written yet (run.checkpoint_every sets how often "
                    "one is): the same command starts the run again")
        return (f"{where}; the same command resumes from {self.run_dir / runs.CHECKPOINT} "
                f"(iteration {self.saved_at})")

    def clock(self) -> None:
        self.state.wall_time_s = self.wall_before + time.perf_counter() - self.started

    def save(self, snapshot: bool) -> None:
        """Write ``last.pth`` (and a snapshot), only when every tensor of the state is finite
        (every rank checks its own copy, which data-parallel training keeps equal, so all stop
        together); rank 0 writes."""
        files = runs.checkpoint_files(self.run_dir, self.state.iteration, snapshot)
        checkpointing.save(self.state, self.cfg, files if self.main else [], self.kept())
        if self.state.dist is not None:
            self.state.dist.barrier()
        self.saved_at = self.state.iteration


def fit(
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    data=None,
    resume: bool = True,
    stop_at: int | None = None,
    dist=None,
    progress_bar: str | None = None,
) -> RunResult:
    """Train ``cfg`` from scratch, from ``model.init_checkpoint``, or resume ``run_dir``.

    Args:
        cfg: the run's configuration.
        run_dir: folder for ``last.pth`` (checkpoints), ``history.csv``, ``metrics.json`` and
            ``config.yaml``; ``None`` keeps everything in memory. A folder that holds a run of
            another config is refused unless ``resume=False`` (a retrain), and so is a folder
            another process is training into (:class:`segda.runs.RunLockedError`).
        data: a :class:`segda.data.registry.DomainData`; built from ``cfg.data`` when omitted.
        resume: continue from ``run_dir/last.pth`` when it exists (a checkpoint of the same
            config, every tensor finite); ``False`` retrains: the folder's results and
            checkpoints are deleted first.
        stop_at: stop after this iteration (for tests and interruption drills); the schedule
            still follows ``optim.max_iters`` and the run can be resumed.
        dist: a :class:`segda.distributed.DistContext` when this process is one rank of a
            data-parallel run (see :mod:`segda.distributed`); its device replaces
            ``run.device``, and only rank 0 writes files.
        progress_bar: how to show progress, whatever ``run.progress`` says: ``"text"`` (a
            plain-text bar on a terminal; elsewhere, e.g. under papermill or in a log file,
            a plain line every 50 iterations: :class:`segda.trainlog.PlainProgress`),
            ``"notebook"`` (tqdm's widget, in JupyterLab), ``"none"``; ``None`` follows
            ``run.progress``. Display only: it is not part of the run's config.
    """
    main = dist is None or dist.is_main
    run_dir = runs.check_run_dir(run_dir, "run_dir") if run_dir is not None else None
    if main:  # everything checkable is checked before the lock makes the folder
        check_before_run(cfg, run_dir, not resume, data=data)
    else:
        check_settings(cfg)
    held = runs.lock(run_dir) if run_dir is not None and main else contextlib.nullcontext()
    with held:
        return _fit(cfg, run_dir, data, resume, stop_at, dist, progress_bar)


def _fit(cfg: TrainConfig, run_dir: Path | None, data, resume: bool, stop_at: int | None,
         dist, progress_bar: str | None) -> RunResult:
    fitting = _restore(cfg, run_dir, data, resume, dist)
    end = min(cfg.optim.early_stop, stop_at if stop_at is not None else cfg.optim.early_stop)
    log = TrainLog(fitting.state, cfg, run_dir, end, fitting.kept, progress_bar)
    try:
        _loop(fitting, log, end)
        _finish(fitting, log)
    except KeyboardInterrupt:
        log.close()
        raise Interrupted(fitting.interrupted()) from None
    return RunResult(fitting.state, cfg, run_dir, time.perf_counter() - fitting.started)


def _restore(cfg: TrainConfig, run_dir: Path | None, data, resume: bool, dist) -> _Fitting:
    """The state a fit starts from: resumed from ``last.pth``, warm-started from
    ``model.init_checkpoint``, or fresh; the run folder prepared and its config written."""
    started = time.perf_counter()
    device = dist.device if dist is not None else repro.resolve_device(cfg.run.device)
    world = dist.world_size if dist is not None else 1
    main = dist is None or dist.is_main
    if run_dir:
        runs.prepare(run_dir, cfg, resume=resume, writes=main)
    repro.seed_everything(cfg.run.seed)
    data = data if data is not None else registry.build_datasets(cfg.data, cfg.model)
    fitting = _Fitting(cfg, run_dir, data, step.build_state(cfg, device), device, started)
    state = fitting.state
    if dist is not None:
        dist.barrier()  # nobody reads last.pth while rank 0 may still be clearing it (a retrain)
    ckpt = runs.resume_checkpoint(run_dir, cfg, world) if run_dir and resume else None
    if ckpt is not None:
        checkpointing.load_state_into(state, ckpt)
        fitting.saved_at = state.iteration
        fitting.wall_before = state.wall_time_s
        del ckpt
    elif cfg.model.init_checkpoint:
        checkpointing.load_segmenter_weights(state.seg, cfg.model.init_checkpoint,
                                             cfg.model.init_kind)
    if run_dir and main:  # only once the starting weights loaded: a failed start binds nothing
        runs.write_config(run_dir, cfg)
    state.seg.train()
    for d in state.discs.values():
        d.train()
    if dist is not None:
        dist.broadcast_modules([state.seg, *state.discs.values()])
        state.dist = dist
    return fitting


def _loop(fitting: _Fitting, log: TrainLog, end: int) -> None:
    """Train up to iteration ``end``: each step's losses logged, evaluations and checkpoints
    at their cadence (each after a flush of the log, so a NaN stops the run before them)."""
    cfg, state, data, device = fitting.cfg, fitting.state, fitting.data, fitting.device
    dist = state.dist
    source_prior = None
    if cfg.method.lambda_cp > 0:
        source_prior = torch.as_tensor(data.source_prior(), dtype=torch.float32, device=device)
    start = state.iteration
    src_iter = loaders.device_batches(data.train_source, cfg, cfg.run.seed, start, device, dist)
    tgt_iter = (loaders.device_batches(data.train_target, cfg, cfg.run.seed + 1, start, device, dist)
                if methods.get(cfg.method.name).uses_target else None)
    while state.iteration < end:
        it = state.iteration
        src = next(src_iter)
        tgt = next(tgt_iter) if tgt_iter is not None else None
        log.record(it, step.train_step(state, src, tgt, cfg, source_prior))
        done = state.iteration
        if done % max(cfg.run.log_every, 1) == 0 or done == end:
            log.flush()
        if cfg.run.eval_every and done % cfg.run.eval_every == 0 and done != end:
            log.flush()
            _evaluate_into(state, data, cfg, device, log.writer)
        if fitting.run_dir and cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0:
            log.flush()
            fitting.clock()
            fitting.save(cfg.run.keep_snapshots)
    log.flush()
    log.close_bar()


def _finish(fitting: _Fitting, log: TrainLog) -> None:
    """A run that reached ``optim.early_stop`` is evaluated (unless it just was); the final
    checkpoint and, on rank 0, ``history.csv`` and ``metrics.json`` are written."""
    cfg, state = fitting.cfg, fitting.state
    if state.iteration >= cfg.optim.early_stop and (
        not state.evals or state.evals[-1]["iteration"] != state.iteration
    ):
        _evaluate_into(state, fitting.data, cfg, fitting.device, log.writer)
    if state.dist is not None:
        state.dist.check_in_sync([state.seg, *state.discs.values()])
    fitting.clock()
    if fitting.run_dir:
        fitting.save(False)
        if fitting.main:
            runs.write_summaries(fitting.run_dir, state, cfg)
    log.close()


def _evaluate_into(state: TrainState, data, cfg: TrainConfig, device, writer) -> None:
    """Evaluate on the target (and source) validation split; each rank of a data-parallel run
    evaluates its share of the images and the confusion matrices are summed."""
    dist = state.dist
    predictor = evaluate.Predictor.from_config(cfg, device)
    entry: dict[str, Any] = {"iteration": state.iteration}
    for name, dataset in (("target", data.val_target), ("source", data.val_source)):
        if dataset is None:
            continue
        res = evaluate.evaluate(
            state.seg, dataset, predictor, max_images=cfg.run.eval_max_images or None,
            rank=dist.rank if dist is not None else 0,
            world_size=dist.world_size if dist is not None else 1,
        )
        entry[f"{name}_miou"] = res.miou
        entry[f"{name}_iou"] = [float(x) for x in res.iou]
        if writer:
            writer.add_scalar(f"miou/{name}", res.miou, state.iteration)
    state.evals.append(entry)


# ------------------------------------------------------------------ runs trained or reused


def ensure_run(run_dir: str | Path, cfg: TrainConfig, *, data=None, retrain: bool = False,
               dist=None, progress_bar: str | None = None) -> RunResult:
    """Train ``cfg`` into ``run_dir`` unless a finished identical run is already there.

    Returns a :class:`RunResult` (loaded from disk when reused). A run folder with a
    *different* config is an error unless ``retrain``, so results never silently mix
    configurations. ``progress_bar``: see :func:`fit`.
    """
    run_dir = runs.check_run_dir(run_dir, "run_dir")
    if not retrain:
        runs.check_config(run_dir, cfg)
        finished = _finished(run_dir, cfg, data)  # reading needs no lock (nor a writable folder)
        if finished is not None:
            return finished
    return fit(cfg, run_dir, data=data, resume=not retrain, dist=dist, progress_bar=progress_bar)


def _finished(run_dir: Path, cfg: TrainConfig, data) -> RunResult | None:
    """The finished run of ``cfg`` in ``run_dir``, or None: its metrics.json must be bound to
    its config.yaml (:func:`segda.runs.is_complete`) and to last.pth (same config, same final
    iteration); otherwise the run is resumed, which rewrites them."""
    if not runs.is_complete(run_dir, cfg):
        return None
    result = load_run(run_dir, data=data)
    if result.config == cfg and result.state.iteration == runs.read_metrics(run_dir).get(
            "iteration"):
        return result
    return None


def load_run(run_dir: str | Path, data=None) -> RunResult:
    """Rebuild a :class:`RunResult` from a run folder's ``last.pth``."""
    run_dir = Path(run_dir)
    path = run_dir / runs.CHECKPOINT
    ckpt = checkpointing.load_run_checkpoint(path)
    cfg = checkpointing.config_of(ckpt, path)
    state = step.build_state(cfg, repro.resolve_device(cfg.run.device))
    rng = repro.rng_state()
    checkpointing.load_state_into(state, ckpt)
    repro.set_rng_state(rng)  # loading a finished run must not disturb the caller's RNG
    state.seg.eval()
    return RunResult(state, cfg, run_dir, 0.0)


# ------------------------------------------------------------------ checks before a run starts


def check_before_run(cfg: TrainConfig, run_dir: str | Path | None, retrain: bool = False, *,
                     data=None) -> None:
    """What training ``cfg`` into ``run_dir`` needs, checked before the run folder is made:
    the settings (:func:`check_settings`), the configured device, and for a new run (a resumed
    one has last.pth) its starting weights and its data folders (unless ``data``, the
    datasets themselves, is given)."""
    check_settings(cfg)
    if run_dir is not None:
        runs.check_run_dir(run_dir)
    repro.check_device(cfg.run.device)
    if run_dir is None or not (Path(run_dir) / runs.CHECKPOINT).exists() or retrain:
        checkpointing.require_init_checkpoint(cfg.model.init_checkpoint)
        if data is None:
            registry.require_roots(cfg.data)


def check_settings(cfg: TrainConfig) -> None:
    """What a config needs that :mod:`segda.config` cannot see alone (it knows no method, model
    or dataset), each refused in one line naming the key: a known method, the 19 classes every
    dataset's labels hold, images large enough for the method's discriminator, TensorBoard
    installed when ``run.tensorboard`` is on."""
    method = methods.get(cfg.method.name)  # an unknown method, before anything runs
    if cfg.model.num_classes != NUM_CLASSES:
        raise ConfigError(
            f"'model.num_classes' is {cfg.model.num_classes} but the labels of every dataset "
            f"(data.dataset={cfg.data.dataset!r}) hold the {NUM_CLASSES} Cityscapes train ids: set "
            f"model.num_classes={NUM_CLASSES} (the 16/13-class scores are subsets of them)")
    disc = method.disc_input
    stride1 = cfg.method.disc_patch_stride1
    if stride1 and (disc is None or disc.kind != "output"):
        raise ConfigError(f"'method.disc_patch_stride1' is {stride1} but method "
                          f"{method.name!r} has no output-space discriminator: set it to 0")
    if disc is not None and disc.kind == "output":
        # each stride-2 convolution (4x4 kernel) halves the map, and the last needs 2 pixels
        least = 2 ** (5 - stride1)
        for key in ("data.source_size", "data.target_size"):
            size = getattr(cfg.data, key.split(".")[1])
            if min(size) < least:
                raise ConfigError(
                    f"{key!r} is {list(size)}, but the output-space discriminator of "
                    f"{method.name!r} needs images of at least {least}x{least} pixels (its "
                    f"{5 - stride1} stride-2 convolutions): use a larger size, or more "
                    f"stride-1 layers (method.disc_patch_stride1)")
    runs.require_tensorboard(cfg)


def train_to_end(cfg: TrainConfig, run_dir: str | Path, *, retrain: bool = False,
                 stop_at: int | None = None, dist=None) -> RunResult:
    """Train ``cfg`` into ``run_dir`` to its end (a finished identical run is reused:
    :func:`ensure_run`) or, with ``stop_at``, up to that iteration (resuming unless
    ``retrain``; the run is evaluated when it finishes)."""
    if stop_at is not None:
        return fit(cfg, run_dir, resume=not retrain, stop_at=stop_at, dist=dist)
    return ensure_run(run_dir, cfg, retrain=retrain, dist=dist)


def outcome(result: RunResult) -> str:
    """Where a run stands, in one line: done with its target mIoU, or stopped early."""
    final = result.final_eval or {}
    if "target_miou" in final:
        return f"done: iteration {result.state.iteration}, target mIoU {100 * final['target_miou']:.2f}"
    return (f"stopped at iteration {result.state.iteration} (not evaluated yet); rerun without "
            "--stop-at to finish the run")
