"""One training step for every method, and the loop that drives it.

The step follows the official order of forward and backward passes (AdaptSegNet
``train_gta2cityscapes_multi.py``, ADVENT ``train_UDA.py``):

1. zero all gradients, set the poly learning rates;
2. with the discriminators frozen: source forward, logits upsampled to the input size,
   segmentation loss (main + lambda * aux), backward (the source graph is freed here);
3. target forward and the method's target loss (none / entropy / fool the discriminators),
   backward; gradients flow *through* the frozen discriminators into the segmenter;
4. discriminators unfrozen: their loss on detached source inputs (label 0) / 2, backward;
   then on detached target inputs (label 1) / 2, backward;
5. one optimizer step for the segmenter, then one per discriminator.

The passes are grouped in three stages (source, target, discriminator), plain functions of the
modules and the batch that ``run.compile`` may compile as they are; the other fast-path switches
(:mod:`segda.fastpath`) change kernels and layouts, not this order. In a data-parallel run
(:mod:`segda.distributed`) the ranks' gradients are averaged between steps 4 and 5.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segda import checkpointing, fastpath, losses, methods, optim, repro
from segda.config import TrainConfig
from segda.methods import METHODS, Method, level_names


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stops and its last checkpoint is left intact."""


@dataclass
class Batch:
    image: torch.Tensor
    label: torch.Tensor | None = None


@dataclass
class TrainState:
    """Everything that changes during training."""

    seg: nn.Module
    discs: dict[str, nn.Module]
    opt_seg: torch.optim.Optimizer
    opt_discs: dict[str, torch.optim.Optimizer]
    iteration: int = 0  # the next iteration to run
    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0  # training wall time summed over every fit() call (resumes included)
    # Data-parallel training (segda.distributed.DistContext): averages gradients and batch-norm
    # statistics over the ranks just before the optimizer steps. None on one process.
    dist: Any = None
    stages: Any = field(default=None, repr=False)  # the step's (possibly compiled) stages


@contextlib.contextmanager
def frozen(modules):
    """Turn off gradients of ``modules``' parameters inside the block.

    The segmenter's adversarial loss must reach the segmenter *through* the discriminator
    without updating it: the official loops set ``requires_grad=False`` on D's parameters.
    """
    modules = list(modules)
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m in modules:
            m.requires_grad_(True)


def build_state(cfg: TrainConfig, device: torch.device) -> TrainState:
    """Segmenter, one discriminator per adapted level, and their optimizers."""
    from segda import models

    method = METHODS[cfg.method.name]
    seg = models.build_segmenter(
        cfg.model.name, num_classes=cfg.model.num_classes, multi_level=cfg.model.multi_level,
        aspp_branches=cfg.model.aspp_branches, bn_mode=cfg.model.bn_mode,
    )
    discs: dict[str, nn.Module] = {}
    if method.has_discriminator:
        for lvl in level_names(cfg.method.levels):
            if method.disc_input == "features":
                channels = seg.feature_channels if lvl == "main" else seg.aux_feature_channels
                discs[lvl] = models.build_discriminator("feature", channels, cfg.method.disc_ndf)
            else:
                discs[lvl] = models.build_discriminator(
                    "output", cfg.model.num_classes, cfg.method.disc_ndf
                )
    memory_format = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    seg.to(device, memory_format=memory_format)
    for d in discs.values():
        d.to(device, memory_format=memory_format)
    fastpath.check_switches(cfg.run, device)
    impl = cfg.run.optim_impl
    return TrainState(
        seg=seg,
        discs=discs,
        opt_seg=fastpath.fast_optimizer(optim.build_segmenter_optimizer(seg, cfg.optim), impl),
        opt_discs={
            k: fastpath.fast_optimizer(optim.build_discriminator_optimizer(d, cfg.optim), impl)
            for k, d in discs.items()
        },
    )


def _segmentation_loss(cfg: TrainConfig, logits: torch.Tensor, labels: torch.Tensor):
    if cfg.run.ce_impl == "masked":
        return losses.seg_cross_entropy_masked(logits.float(), labels)
    return losses.seg_cross_entropy(logits.float(), labels)


def _forward(seg: nn.Module, image: torch.Tensor, cfg: TrainConfig):
    device_type = image.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.run.amp):
        return seg(image)


def _upsampled(out, size: tuple[int, int], cfg: TrainConfig) -> dict[str, torch.Tensor]:
    up = {"main": methods.upsample(out.main, size, cfg.run.align_corners)}
    if out.aux is not None:
        up["aux"] = methods.upsample(out.aux, size, cfg.run.align_corners)
    return up


def _source_stage(seg, image, label, *, cfg: TrainConfig, method: Method):
    """Source forward, logits upsampled to the input size, weighted segmentation losses.

    Also returns what the discriminators will see of this pass, detached: the upsampled logits
    (their softmax / self-information is taken in the discriminator stage) or the features.
    """
    mcfg = cfg.method
    out = _forward(seg, image, cfg)
    up = _upsampled(out, tuple(image.shape[-2:]), cfg)
    terms = {"seg_main": mcfg.lambda_seg_main * _segmentation_loss(cfg, up["main"], label)}
    if "aux" in up and mcfg.lambda_seg_aux > 0:
        terms["seg_aux"] = mcfg.lambda_seg_aux * _segmentation_loss(cfg, up["aux"], label)
    return terms, _disc_raw(method, out, up, mcfg.levels)


def _target_stage(seg, discs, image, source_prior, *, cfg: TrainConfig, method: Method):
    """Target forward and the method's target terms (discriminators frozen by the caller)."""
    if method.target_term == "forward_only":
        # Batch norm in training mode normalises with, and updates running statistics from,
        # the target batch; no loss and no gradient.
        with torch.no_grad():
            _forward(seg, image, cfg)
        return {}, {}
    out = _forward(seg, image, cfg)
    up = _upsampled(out, tuple(image.shape[-2:]), cfg)
    with torch.autocast(image.device.type, torch.bfloat16, enabled=cfg.run.amp):
        terms = methods.target_losses(method, cfg.method, out, up, discs, source_prior)
    return terms, _disc_raw(method, out, up, cfg.method.levels)


def _disc_stage(discs, raw, domain: str, *, cfg: TrainConfig, method: Method):
    """Each discriminator's loss on one domain's detached outputs (source 0, target 1), / 2."""
    inputs = {lvl: _disc_input(method, x) for lvl, x in raw.items()}
    with torch.autocast(next(iter(raw.values())).device.type, torch.bfloat16, enabled=cfg.run.amp):
        return methods.discriminator_losses(method, cfg.method, discs, inputs, domain)


def _disc_raw(method: Method, out, up, levels: str) -> dict[str, torch.Tensor]:
    if not method.has_discriminator:
        return {}
    if method.disc_input == "features":
        return {lvl: out.feature_map(lvl).detach() for lvl in level_names(levels)}
    return {lvl: up[lvl].detach() for lvl in level_names(levels)}


def _disc_input(method: Method, raw: torch.Tensor) -> torch.Tensor:
    if method.disc_input == "features":
        return raw
    return methods.discriminator_input(method, None, {"x": raw}, "x")


@dataclass
class _Stages:
    """The three stages of a step, bound to one config; compiled when ``run.compile`` asks."""

    cfg: TrainConfig
    seg: nn.Module  # what the stages call: the segmenter or a compiled wrapper of it
    discs: dict[str, nn.Module]
    source: Any
    target: Any
    disc: Any
    cuda_graphs: bool


def _stages(state: TrainState, cfg: TrainConfig) -> _Stages:
    cached = state.stages
    if cached is not None and cached.cfg == cfg:
        return cached
    method = METHODS[cfg.method.name]
    device = next(state.seg.parameters()).device
    run = cfg.run
    source = functools.partial(_source_stage, cfg=cfg, method=method)
    target = functools.partial(_target_stage, cfg=cfg, method=method)
    disc = functools.partial(_disc_stage, cfg=cfg, method=method)
    seg, discs = state.seg, state.discs
    if run.compile != "none" and run.compile_scope == "modules":
        seg = fastpath.compiled_module(seg, run, device)
        discs = {k: fastpath.compiled_module(d, run, device) for k, d in discs.items()}
    elif run.compile != "none":
        source, target, disc = (fastpath.compiled(f, run, device) for f in (source, target, disc))
    state.stages = _Stages(cfg, seg, discs, source, target, disc,
                           fastpath.uses_cuda_graphs(run, device))
    return state.stages


def train_step(
    state: TrainState,
    src: Batch,
    tgt: Batch | None,
    cfg: TrainConfig,
    source_prior: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One iteration of any method; returns the detached (weighted) losses by name."""
    method: Method = METHODS[cfg.method.name]
    stages = _stages(state, cfg)
    it = state.iteration
    optim.set_poly_lr(state.opt_seg, cfg.optim.lr, it, cfg.optim)
    for opt in state.opt_discs.values():
        optim.set_poly_lr(opt, cfg.optim.lr_disc, it, cfg.optim)
    state.opt_seg.zero_grad(set_to_none=True)
    for opt in state.opt_discs.values():
        opt.zero_grad(set_to_none=True)
    if stages.cuda_graphs:
        # A new step: outputs of the previous step's graphs may be overwritten from here on.
        torch.compiler.cudagraph_mark_step_begin()

    logged: dict[str, torch.Tensor] = {}
    raw_src: dict[str, torch.Tensor] = {}
    raw_tgt: dict[str, torch.Tensor] = {}
    with frozen(state.discs.values()):
        seg_terms, raw_src = stages.source(stages.seg, src.image, src.label)
        sum(seg_terms.values()).backward()  # frees the source graph before the target pass
        logged.update(seg_terms)
        if method.uses_target:
            tgt_terms, raw_tgt = stages.target(stages.seg, stages.discs, tgt.image, source_prior)
            if tgt_terms:
                sum(tgt_terms.values()).backward()
                logged.update(tgt_terms)

    if method.has_discriminator:
        # Source then target, each with its own backward, so the two graphs never coexist.
        for raw, domain in ((raw_src, "src"), (raw_tgt, "tgt")):
            d_terms = stages.disc(stages.discs, raw, domain)
            sum(d_terms.values()).backward()
            logged.update(d_terms)
        del raw_src, raw_tgt

    if state.dist is not None:
        state.dist.sync_step(state)
    state.opt_seg.step()
    for lvl in level_names(cfg.method.levels):
        if lvl in state.opt_discs:
            state.opt_discs[lvl].step()
    state.iteration = it + 1
    if stages.cuda_graphs:
        # Graph outputs are reused by the next replay; the loop keeps losses across steps.
        return {k: v.detach().clone() for k, v in logged.items()}
    return {k: v.detach() for k, v in logged.items()}


# ----------------------------------------------------------------------------- the loop


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


def state_dict_of(state: TrainState, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "format": "segda-run-v1",
        "config": cfg.to_dict(),
        "iteration": state.iteration,
        "segmenter": state.seg.state_dict(),
        "discriminators": {k: d.state_dict() for k, d in state.discs.items()},
        "opt_seg": state.opt_seg.state_dict(),
        "opt_discs": {k: o.state_dict() for k, o in state.opt_discs.items()},
        "rng": repro.rng_state(),
        "history": state.history,
        "evals": state.evals,
        "wall_time_s": state.wall_time_s,
        "environment": repro.environment(),
    }


def load_state_into(state: TrainState, ckpt: dict[str, Any]) -> None:
    state.seg.load_state_dict(ckpt["segmenter"])
    for k, d in state.discs.items():
        d.load_state_dict(ckpt["discriminators"][k])
    state.opt_seg.load_state_dict(ckpt["opt_seg"])
    for k, o in state.opt_discs.items():
        o.load_state_dict(ckpt["opt_discs"][k])
    state.iteration = int(ckpt["iteration"])
    state.history = list(ckpt["history"])
    state.evals = list(ckpt["evals"])
    state.wall_time_s = float(ckpt.get("wall_time_s", 0.0))  # absent before segda recorded it
    repro.set_rng_state(ckpt["rng"])


def load_segmenter_weights(seg: nn.Module, path: str | Path, kind: str = "auto") -> None:
    """Warm start: a segda run checkpoint (its segmenter) or an official checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"init checkpoint not found: {path} (set model.init_checkpoint to an existing file, "
            "or '' to start from scratch)"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and blob.get("format") == "segda-run-v1":
        seg.load_state_dict(blob["segmenter"])
    else:
        from segda.models import load_checkpoint

        load_checkpoint(seg, path, kind=kind)


def _batches(
    dataset, cfg: TrainConfig, seed: int, start_iter: int, device, dist=None
) -> Iterator[Batch]:
    from segda.data.loaders import build_loader

    if dist is not None and dist.world_size > 1:
        from segda.distributed import build_rank_loader

        loader = build_rank_loader(
            dataset, batch_size=cfg.data.batch_size, rank=dist.rank, world_size=dist.world_size,
            seed=seed, start_iter=start_iter, num_workers=cfg.data.num_workers,
            pin_memory=device.type == "cuda",
        )
    else:
        loader = build_loader(
            dataset, batch_size=cfg.data.batch_size, seed=seed, start_iter=start_iter,
            num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
        )
    memory_format = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    for item in loader:
        label = item.get("label")
        yield Batch(
            image=item["image"].to(device, non_blocking=True, memory_format=memory_format),
            label=None if label is None else label.to(device, non_blocking=True),
        )


def _check_finite(values: dict[str, float], it: int, last_ckpt: Path | None) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint yet"
        raise NonFiniteLossError(
            f"non-finite loss at iteration {it}: {bad}; the run stopped and {where} is kept "
            "untouched (lower the learning rate or lambdas, or check the labels)"
        )


def fit(
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    data=None,
    resume: bool = True,
    stop_at: int | None = None,
    dist=None,
) -> RunResult:
    """Train ``cfg`` from scratch, from ``model.init_checkpoint``, or resume ``run_dir``.

    Args:
        cfg: the run's configuration.
        run_dir: folder for ``last.pth`` (checkpoints), ``history.csv``, ``metrics.json`` and
            ``config.yaml``; ``None`` keeps everything in memory.
        data: a :class:`segda.data.registry.DomainData`; built from ``cfg.data`` when omitted.
        resume: continue from ``run_dir/last.pth`` when it exists.
        stop_at: stop after this iteration (for tests and interruption drills); the schedule
            still follows ``optim.max_iters`` and the run can be resumed.
        dist: a :class:`segda.distributed.DistContext` when this process is one rank of a
            data-parallel run (see :mod:`segda.distributed`); its device replaces
            ``run.device``, and only rank 0 writes files.
    """
    from segda import evaluate
    from segda.data import registry

    t0 = time.perf_counter()
    device = dist.device if dist is not None else repro.resolve_device(cfg.run.device)
    world = dist.world_size if dist is not None else 1
    main = dist is None or dist.is_main
    repro.seed_everything(cfg.run.seed)
    data = data if data is not None else registry.build_datasets(cfg.data, cfg.model)
    state = build_state(cfg, device)
    run_dir = Path(run_dir) if run_dir is not None else None
    last_ckpt = run_dir / "last.pth" if run_dir else None
    if run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
        if main:
            (run_dir / "config.yaml").write_text(cfg.to_yaml())
    if dist is not None:
        dist.barrier()  # nobody reads last.pth while rank 0 may still be writing it
    if resume and last_ckpt is not None and last_ckpt.exists():
        ckpt = checkpointing.load_run_checkpoint(last_ckpt)
        if int(ckpt.get("world_size", 1)) != world:
            raise ValueError(
                f"{last_ckpt} was written by a run over {ckpt.get('world_size', 1)} process(es); "
                f"resuming it over {world} would draw other images. Resume with the same number."
            )
        load_state_into(state, ckpt)
        del ckpt
    elif cfg.model.init_checkpoint:
        load_segmenter_weights(state.seg, cfg.model.init_checkpoint, cfg.model.init_kind)
    state.seg.train()
    for d in state.discs.values():
        d.train()
    if dist is not None:
        dist.broadcast_modules([state.seg, *state.discs.values()])
        state.dist = dist

    wall_before = state.wall_time_s

    def clock() -> None:
        state.wall_time_s = wall_before + time.perf_counter() - t0

    method = METHODS[cfg.method.name]
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
    bar = _progress(cfg, state.iteration, end) if main else None

    def flush() -> None:
        if dist is not None and pending:
            # Log the mean over the ranks: every rank then sees the same (non-)finite values.
            flat = dist.mean(torch.stack([v.float() for _, t in pending for v in t.values()]))
            it_flat = iter(flat.tolist())
            averaged = [(it, {k: next(it_flat) for k in terms}) for it, terms in pending]
            pending[:] = averaged
        for it, terms in pending:
            values = {k: float(v) for k, v in terms.items()}
            _check_finite(values, it, last_ckpt if last_ckpt and last_ckpt.exists() else None)
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
        pending.append((it, train_step(state, src, tgt, cfg, source_prior)))
        if bar is not None:
            bar.update(1)
        done = state.iteration
        if done % max(cfg.run.log_every, 1) == 0 or done == end:
            flush()
        if cfg.run.eval_every and done % cfg.run.eval_every == 0 and done != end:
            flush()
            _evaluate_into(state, data, cfg, device, writer, evaluate)
        if run_dir and cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0:
            flush()
            clock()
            _save(state, cfg, run_dir, keep=cfg.run.keep_snapshots)
    flush()
    if bar is not None:
        bar.close()
    if state.iteration >= cfg.optim.early_stop and (
        not state.evals or state.evals[-1]["iteration"] != state.iteration
    ):
        _evaluate_into(state, data, cfg, device, writer, evaluate)
    if dist is not None:
        dist.check_in_sync([state.seg, *state.discs.values()])
    clock()
    if run_dir:
        _save(state, cfg, run_dir, keep=False)
        if main:
            _write_summaries(state, cfg, run_dir)
    if writer:
        writer.close()
    return RunResult(state, cfg, run_dir, time.perf_counter() - t0)


def _evaluate_into(state, data, cfg, device, writer, evaluate) -> None:
    from torch.utils.data import Subset

    from segda import metrics

    dist = state.dist
    was_training = state.seg.training
    entry: dict[str, Any] = {"iteration": state.iteration}
    max_images = cfg.run.eval_max_images or None
    for name, dataset in (("target", data.val_target), ("source", data.val_source)):
        if dataset is None:
            continue
        if dist is not None and dist.world_size > 1:
            # Each rank evaluates every W-th image; the confusion matrices are summed.
            n = len(dataset) if max_images is None else min(max_images, len(dataset))
            part = Subset(dataset, range(dist.rank, n, dist.world_size))
            res = evaluate.evaluate(
                state.seg, part, device=device, num_classes=cfg.model.num_classes,
                amp=cfg.run.amp, align_corners=cfg.run.align_corners,
            )
            iou = metrics.per_class_iou(dist.sum_(res.confusion))
            miou = metrics.mean_iou(iou)
        else:
            res = evaluate.evaluate(
                state.seg, dataset, device=device, num_classes=cfg.model.num_classes,
                max_images=max_images, amp=cfg.run.amp, align_corners=cfg.run.align_corners,
            )
            iou, miou = res.iou, res.miou
        entry[f"{name}_miou"] = miou
        entry[f"{name}_iou"] = [float(x) for x in iou]
        if writer:
            writer.add_scalar(f"miou/{name}", miou, state.iteration)
    state.evals.append(entry)
    state.seg.train(was_training)


def _save(state: TrainState, cfg: TrainConfig, run_dir: Path, keep: bool) -> None:
    dist = state.dist
    if dist is None or dist.is_main:
        blob = state_dict_of(state, cfg)
        if dist is not None:
            blob["world_size"] = dist.world_size
        checkpointing.save_atomic(blob, run_dir / "last.pth")
        if keep:
            checkpointing.save_atomic(blob, run_dir / f"iter_{state.iteration:06d}.pth")
    if dist is not None:
        dist.barrier()


def _write_summaries(state: TrainState, cfg: TrainConfig, run_dir: Path) -> None:
    import pandas as pd

    pd.DataFrame(state.history).to_csv(run_dir / "history.csv", index=False)
    summary = {
        "method": cfg.method.name,
        "levels": cfg.method.levels,
        "seed": cfg.run.seed,
        "train_on": cfg.data.train_on,
        "iteration": state.iteration,
        "evals": state.evals,
        "wall_time_s": round(state.wall_time_s, 3),
        "environment": repro.environment(),
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=1))


def _progress(cfg: TrainConfig, start: int, end: int):
    if not cfg.run.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=end, initial=start, desc=cfg.method.name, leave=False)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise RuntimeError("run.tensorboard needs the 'tensorboard' package") from err
    return SummaryWriter(str(run_dir / "tensorboard"))
