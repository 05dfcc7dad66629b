"""The fit loop: iterations, logging, evaluation cadence, checkpoints, the NaN stop.

The step itself is :func:`segda.methods.train_step` (the same for every method); the checkpoint
format is :mod:`segda.checkpointing`; the run folder's files are written by :mod:`segda.runs`.
:func:`ensure_run` trains a run unless a finished run of the same config is already there,
which is how notebooks and experiments share runs.

A training process holds its run folder's lock (:func:`segda.runs.lock`; in a data-parallel run,
rank 0 holds it), resumes only a checkpoint of the same config, and never writes a checkpoint
whose tensors are not all finite, so ``last.pth`` is always a state worth resuming.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segda import checkpointing, evaluate, methods, repro, runs
from segda.config import TrainConfig
from segda.data import loaders, registry
from segda.methods import Batch, TrainState


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stops and its last checkpoint is left intact."""


class NonFiniteStateError(NonFiniteLossError):
    """A tensor of the training state (a weight, a batch-norm statistic, an optimizer moment)
    became NaN or infinite; the run stops before writing it, leaving the last checkpoint."""


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


def _batches(dataset, cfg: TrainConfig, seed: int, start_iter: int, device, dist) -> Iterator[Batch]:
    loader = loaders.build_loader(
        dataset, batch_size=cfg.data.batch_size, seed=seed, start_iter=start_iter,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
        rank=dist.rank if dist is not None else 0,
        world_size=dist.world_size if dist is not None else 1,
    )
    memory_format = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    for item in loader:
        label = item.get("label")
        yield Batch(
            image=item["image"].to(device, non_blocking=True, memory_format=memory_format),
            label=None if label is None else label.to(device, non_blocking=True),
        )


def _kept(last_ckpt: Path | None, saved_at: int | None) -> str:
    """What a stopped run leaves: its last checkpoint (every tensor finite), or none."""
    if last_ckpt is None or saved_at is None:
        return "no checkpoint was written"
    return f"{last_ckpt} (iteration {saved_at}, every tensor finite) is kept untouched"


def _check_finite(values: dict[str, float], it: int, kept: str) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss at iteration {it}: {bad}; the run stopped and {kept} "
            "(lower the learning rate or lambdas, or check the labels)"
        )


def _check_state_finite(state: TrainState, kept: str) -> None:
    bad = checkpointing.non_finite(checkpointing.training_tensors(state))
    if bad:
        shown = ", ".join(bad[:4]) + (f", ... {len(bad) - 4} more" if len(bad) > 4 else "")
        raise NonFiniteStateError(
            f"non-finite values in the training state at iteration {state.iteration}: "
            f"{len(bad)} tensor(s) ({shown}); the run stopped without writing them and {kept} "
            "(lower the learning rate or lambdas, or check the labels)"
        )


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
            plain-text bar, e.g. under papermill), ``"notebook"`` (tqdm's widget, in
            JupyterLab), ``"none"``; ``None`` follows ``run.progress``. Display only: it is
            not part of the run's config.
    """
    main = dist is None or dist.is_main
    run_dir = Path(run_dir) if run_dir is not None else None
    held = runs.lock(run_dir) if run_dir is not None and main else contextlib.nullcontext()
    with held:
        return _fit(cfg, run_dir, data, resume, stop_at, dist, progress_bar)


def _fit(cfg: TrainConfig, run_dir: Path | None, data, resume: bool, stop_at: int | None,
         dist, progress_bar: str | None) -> RunResult:
    t0 = time.perf_counter()
    device = dist.device if dist is not None else repro.resolve_device(cfg.run.device)
    world = dist.world_size if dist is not None else 1
    main = dist is None or dist.is_main
    method = methods.get(cfg.method.name)
    if run_dir and main and run_dir.is_dir():
        checkpointing.remove_temporaries(run_dir)  # left by a killed write; we hold the lock
    if run_dir and resume:
        runs.check_config(run_dir, cfg)
    elif run_dir and main:
        runs.clear_results(run_dir)  # a retrain: no result of the old run may survive it
    repro.seed_everything(cfg.run.seed)
    data = data if data is not None else registry.build_datasets(cfg.data, cfg.model)
    state = methods.build_state(cfg, device)
    last_ckpt = run_dir / runs.CHECKPOINT if run_dir else None
    saved_at: int | None = None  # the iteration last.pth holds
    if run_dir and main:
        runs.write_config(run_dir, cfg)
    if dist is not None:
        dist.barrier()  # nobody reads last.pth while rank 0 may still be writing it
    if resume and last_ckpt is not None and last_ckpt.exists():
        ckpt = checkpointing.load_run_checkpoint(last_ckpt)
        if int(ckpt.get("world_size", 1)) != world:
            raise checkpointing.CheckpointError(
                f"{last_ckpt} was written by a run over {ckpt.get('world_size', 1)} process(es); "
                f"resuming it over {world} would draw other images. Resume with the same number."
            )
        _check_same_config(last_ckpt, ckpt, cfg)
        checkpointing.load_state_into(state, ckpt)
        saved_at = state.iteration
        del ckpt
    elif cfg.model.init_checkpoint:
        checkpointing.load_segmenter_weights(state.seg, cfg.model.init_checkpoint,
                                             cfg.model.init_kind)
    state.seg.train()
    for d in state.discs.values():
        d.train()
    if dist is not None:
        dist.broadcast_modules([state.seg, *state.discs.values()])
        state.dist = dist

    wall_before = state.wall_time_s

    def clock() -> None:
        state.wall_time_s = wall_before + time.perf_counter() - t0

    end = min(cfg.optim.early_stop, stop_at if stop_at is not None else cfg.optim.early_stop)
    source_prior = None
    if cfg.method.lambda_cp > 0:
        source_prior = torch.as_tensor(data.source_prior(), dtype=torch.float32, device=device)
    src_iter = _batches(data.train_source, cfg, cfg.run.seed, state.iteration, device, dist)
    tgt_iter = (
        _batches(data.train_target, cfg, cfg.run.seed + 1, state.iteration, device, dist)
        if method.uses_target else None
    )
    writer = _tensorboard(run_dir) if cfg.run.tensorboard and run_dir and main else None
    pending: list[tuple[int, dict[str, torch.Tensor]]] = []
    bar = _progress(cfg, state.iteration, end, progress_bar) if main else None

    def flush() -> None:
        if dist is not None and pending:
            # Log the mean over the ranks: every rank then sees the same (non-)finite values.
            flat = dist.mean(torch.stack([v.float() for _, t in pending for v in t.values()]))
            it_flat = iter(flat.tolist())
            averaged = [(it, {k: next(it_flat) for k in terms}) for it, terms in pending]
            pending[:] = averaged
        for it, terms in pending:
            values = {k: float(v) for k, v in terms.items()}
            _check_finite(values, it, _kept(last_ckpt, saved_at))
            state.history.append({"iteration": it, **values})
            if writer:
                for k, v in values.items():
                    writer.add_scalar(f"loss/{k}", v, it)
        if pending and bar is not None:
            bar.set_postfix({k: f"{v:.3g}" for k, v in state.history[-1].items() if k != "iteration"})
        pending.clear()

    while state.iteration < end:
        it = state.iteration
        src = next(src_iter)
        tgt = next(tgt_iter) if tgt_iter is not None else None
        pending.append((it, methods.train_step(state, src, tgt, cfg, source_prior)))
        if bar is not None:
            bar.update(1)
        done = state.iteration
        if done % max(cfg.run.log_every, 1) == 0 or done == end:
            flush()
        if cfg.run.eval_every and done % cfg.run.eval_every == 0 and done != end:
            flush()
            _evaluate_into(state, data, cfg, device, writer)
        if run_dir and cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0:
            flush()
            clock()
            _save(state, cfg, run_dir, cfg.run.keep_snapshots, _kept(last_ckpt, saved_at))
            saved_at = state.iteration
    flush()
    if bar is not None:
        bar.close()
    if state.iteration >= cfg.optim.early_stop and (
        not state.evals or state.evals[-1]["iteration"] != state.iteration
    ):
        _evaluate_into(state, data, cfg, device, writer)
    if dist is not None:
        dist.check_in_sync([state.seg, *state.discs.values()])
    clock()
    if run_dir:
        _save(state, cfg, run_dir, False, _kept(last_ckpt, saved_at))
        if main:
            runs.write_summaries(run_dir, state, cfg)
    if writer:
        writer.close()
    return RunResult(state, cfg, run_dir, time.perf_counter() - t0)


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


def _check_same_config(path: Path, ckpt: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse to resume a checkpoint written by a run of another config."""
    old = checkpointing.config_of(ckpt, path)
    if old != cfg:
        raise checkpointing.CheckpointError(
            f"{path} was written by a run of another config "
            f"({runs.diff(old.to_dict(), cfg.to_dict())}); resuming it would mix two runs. "
            "Use another run folder, or retrain this one (retrain=True; command line: --retrain)"
        )


def _save(state: TrainState, cfg: TrainConfig, run_dir: Path, keep: bool, kept: str) -> None:
    """Write ``last.pth`` (and a snapshot when ``keep``), only when every tensor of the state
    is finite (every rank checks its own copy, which data-parallel training keeps equal, so all
    stop together)."""
    _check_state_finite(state, kept)
    dist = state.dist
    if dist is None or dist.is_main:
        blob = checkpointing.run_state(state, cfg)
        checkpointing.save_atomic(blob, run_dir / runs.CHECKPOINT)
        if keep:
            checkpointing.save_atomic(blob, run_dir / f"iter_{state.iteration:06d}.pth")
    if dist is not None:
        dist.barrier()


PROGRESS_BARS = ("text", "notebook", "none")


def _progress(cfg: TrainConfig, start: int, end: int, style: str | None = None):
    """A tqdm bar, or ``None``. ``style`` (see :func:`fit`) overrides ``run.progress``, whose
    bar is tqdm's automatic choice (a widget in a notebook kernel, text elsewhere)."""
    if style is not None and style not in PROGRESS_BARS:
        raise ValueError(f"progress_bar must be one of {PROGRESS_BARS} or None, got {style!r}")
    if style == "none" or (style is None and not cfg.run.progress):
        return None
    # A text bar is also what an executed notebook stores (one output per redraw): redraw it
    # every few seconds, not ten times a second.
    interval = {"text": 5.0}.get(style, 0.1)
    if style == "text":
        from tqdm.std import tqdm
    elif style == "notebook":
        from tqdm.notebook import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(total=end, initial=start, desc=cfg.method.name, leave=style is not None,
                mininterval=interval)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise RuntimeError("run.tensorboard needs the 'tensorboard' package") from err
    return SummaryWriter(str(run_dir / "tensorboard"))


# ------------------------------------------------------------------ runs trained or reused


def ensure_run(run_dir: str | Path, cfg: TrainConfig, *, data=None, retrain: bool = False,
               dist=None, progress_bar: str | None = None) -> RunResult:
    """Train ``cfg`` into ``run_dir`` unless a finished identical run is already there.

    Returns a :class:`RunResult` (loaded from disk when reused). A run folder with a
    *different* config is an error unless ``retrain``, so results never silently mix
    configurations. ``progress_bar``: see :func:`fit`.
    """
    run_dir = Path(run_dir)
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
    state = methods.build_state(cfg, repro.resolve_device(cfg.run.device))
    rng = repro.rng_state()
    checkpointing.load_state_into(state, ckpt)
    repro.set_rng_state(rng)  # loading a finished run must not disturb the caller's RNG
    state.seg.eval()
    return RunResult(state, cfg, run_dir, 0.0)
