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
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segda import checkpointing, losses, methods, optim, repro
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
    return TrainState(
        seg=seg,
        discs=discs,
        opt_seg=optim.build_segmenter_optimizer(seg, cfg.optim),
        opt_discs={k: optim.build_discriminator_optimizer(d, cfg.optim) for k, d in discs.items()},
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


def train_step(
    state: TrainState,
    src: Batch,
    tgt: Batch | None,
    cfg: TrainConfig,
    source_prior: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One iteration of any method; returns the detached (weighted) losses by name."""
    method: Method = METHODS[cfg.method.name]
    it = state.iteration
    optim.set_poly_lr(state.opt_seg, cfg.optim.lr, it, cfg.optim)
    for opt in state.opt_discs.values():
        optim.set_poly_lr(opt, cfg.optim.lr_disc, it, cfg.optim)
    state.opt_seg.zero_grad(set_to_none=True)
    for opt in state.opt_discs.values():
        opt.zero_grad(set_to_none=True)

    logged: dict[str, torch.Tensor] = {}
    mcfg = cfg.method
    d_in_src: dict[str, torch.Tensor] = {}
    d_in_tgt: dict[str, torch.Tensor] = {}
    with frozen(state.discs.values()):
        out_src = _forward(state.seg, src.image, cfg)
        up_src = _upsampled(out_src, tuple(src.image.shape[-2:]), cfg)
        seg_terms = {"seg_main": mcfg.lambda_seg_main * _segmentation_loss(cfg, up_src["main"], src.label)}
        if "aux" in up_src and mcfg.lambda_seg_aux > 0:
            seg_terms["seg_aux"] = mcfg.lambda_seg_aux * _segmentation_loss(cfg, up_src["aux"], src.label)
        sum(seg_terms.values()).backward()
        logged.update(seg_terms)
        if method.has_discriminator:
            d_in_src = {
                lvl: methods.discriminator_input(method, out_src, up_src, lvl).detach()
                for lvl in level_names(mcfg.levels)
            }
        del out_src, up_src

        if method.target_term == "forward_only":
            # Batch norm in training mode normalises with, and updates running statistics from,
            # the target batch; no loss and no gradient.
            with torch.no_grad():
                _forward(state.seg, tgt.image, cfg)
        elif method.uses_target:
            out_tgt = _forward(state.seg, tgt.image, cfg)
            up_tgt = _upsampled(out_tgt, tuple(tgt.image.shape[-2:]), cfg)
            with torch.autocast(tgt.image.device.type, torch.bfloat16, enabled=cfg.run.amp):
                tgt_terms = methods.target_losses(
                    method, mcfg, out_tgt, up_tgt, state.discs, source_prior
                )
            if tgt_terms:
                sum(tgt_terms.values()).backward()
                logged.update(tgt_terms)
            if method.has_discriminator:
                d_in_tgt = {
                    lvl: methods.discriminator_input(method, out_tgt, up_tgt, lvl).detach()
                    for lvl in level_names(mcfg.levels)
                }
            del out_tgt, up_tgt

    if method.has_discriminator:
        for inputs, domain in ((d_in_src, "src"), (d_in_tgt, "tgt")):
            with torch.autocast(inputs["main"].device.type, torch.bfloat16, enabled=cfg.run.amp):
                d_terms = methods.discriminator_losses(method, mcfg, state.discs, inputs, domain)
            sum(d_terms.values()).backward()
            logged.update(d_terms)

    state.opt_seg.step()
    for lvl in level_names(mcfg.levels):
        if lvl in state.opt_discs:
            state.opt_discs[lvl].step()
    state.iteration = it + 1
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


def _batches(dataset, cfg: TrainConfig, seed: int, start_iter: int, device) -> Iterator[Batch]:
    from segda.data.loaders import build_loader

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
    """
    from segda import evaluate
    from segda.data import registry

    t0 = time.perf_counter()
    device = repro.resolve_device(cfg.run.device)
    repro.seed_everything(cfg.run.seed)
    data = data if data is not None else registry.build_datasets(cfg.data, cfg.model)
    state = build_state(cfg, device)
    run_dir = Path(run_dir) if run_dir is not None else None
    last_ckpt = run_dir / "last.pth" if run_dir else None
    if run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
    if resume and last_ckpt is not None and last_ckpt.exists():
        load_state_into(state, checkpointing.load_run_checkpoint(last_ckpt))
    elif cfg.model.init_checkpoint:
        load_segmenter_weights(state.seg, cfg.model.init_checkpoint, cfg.model.init_kind)
    state.seg.train()
    for d in state.discs.values():
        d.train()

    method = METHODS[cfg.method.name]
    end = min(cfg.optim.early_stop, stop_at if stop_at is not None else cfg.optim.early_stop)
    source_prior = None
    if cfg.method.lambda_cp > 0:
        source_prior = torch.as_tensor(data.source_prior(), dtype=torch.float32, device=device)
    src_iter = _batches(data.train_source, cfg, cfg.run.seed, state.iteration, device)
    tgt_iter = (
        _batches(data.train_target, cfg, cfg.run.seed + 1, state.iteration, device)
        if method.uses_target else None
    )
    writer = _tensorboard(run_dir) if cfg.run.tensorboard and run_dir else None
    pending: list[tuple[int, dict[str, torch.Tensor]]] = []
    bar = _progress(cfg, state.iteration, end)

    def flush() -> None:
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
            _save(state, cfg, run_dir, keep=cfg.run.keep_snapshots)
    flush()
    if bar is not None:
        bar.close()
    if state.iteration >= cfg.optim.early_stop and (
        not state.evals or state.evals[-1]["iteration"] != state.iteration
    ):
        _evaluate_into(state, data, cfg, device, writer, evaluate)
    if run_dir:
        _save(state, cfg, run_dir, keep=False)
        _write_summaries(state, cfg, run_dir)
    if writer:
        writer.close()
    return RunResult(state, cfg, run_dir, time.perf_counter() - t0)


def _evaluate_into(state, data, cfg, device, writer, evaluate) -> None:
    was_training = state.seg.training
    entry: dict[str, Any] = {"iteration": state.iteration}
    max_images = cfg.run.eval_max_images or None
    for name, dataset in (("target", data.val_target), ("source", data.val_source)):
        if dataset is None:
            continue
        res = evaluate.evaluate(
            state.seg, dataset, device=device, num_classes=cfg.model.num_classes,
            max_images=max_images, amp=cfg.run.amp, align_corners=cfg.run.align_corners,
        )
        entry[f"{name}_miou"] = res.miou
        entry[f"{name}_iou"] = [float(x) for x in res.iou]
        if writer:
            writer.add_scalar(f"miou/{name}", res.miou, state.iteration)
    state.evals.append(entry)
    state.seg.train(was_training)


def _save(state: TrainState, cfg: TrainConfig, run_dir: Path, keep: bool) -> None:
    blob = state_dict_of(state, cfg)
    checkpointing.save_atomic(blob, run_dir / "last.pth")
    if keep:
        checkpointing.save_atomic(blob, run_dir / f"iter_{state.iteration:06d}.pth")


def _write_summaries(state: TrainState, cfg: TrainConfig, run_dir: Path) -> None:
    import pandas as pd

    pd.DataFrame(state.history).to_csv(run_dir / "history.csv", index=False)
    summary = {
        "method": cfg.method.name,
        "levels": cfg.method.levels,
        "iteration": state.iteration,
        "evals": state.evals,
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
