"""The one training step every method shares: its state, its three stages and their
compilation, and the diagnostics it can log.

The step (:func:`train_step`) follows the official order of forward and backward passes
(AdaptSegNet ``train_gta2cityscapes_multi.py``, ADVENT ``train_UDA.py``):

1. zero all gradients, set the poly learning rates;
2. with the discriminators frozen: source forward, logits upsampled to the input size,
   segmentation loss (main + lambda * aux), backward (the source graph is freed here);
3. target forward and the method's target loss (none / entropy / fool the discriminators),
   backward; gradients flow *through* the frozen discriminators into the segmenter;
4. discriminators unfrozen: their loss on detached source inputs (label 0) / 2, backward;
   then on detached target inputs (label 1) / 2, backward;
5. one optimizer step for the segmenter, then one per discriminator.

What differs between methods (their target terms, what their discriminators see) is a row of
:mod:`segda.methods`. The passes are grouped in three stages (source, target, discriminator),
plain functions of the modules and the batch that ``run.compile`` may compile as they are; the
other fast-path switches (:mod:`segda.fastpath`) change kernels and layouts, not this order. In
a data-parallel run the ranks' gradients are averaged between steps 4 and 5
(``TrainState.dist``).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from segda import fastpath, losses, methods, models, optim
from segda.methods import Batch, Method, level_names
from segda.models.outputs import SegOutput
from segda.train_state import TrainState

if TYPE_CHECKING:
    from segda.config import TrainConfig


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
    method = methods.get(cfg.method.name)
    seg = models.build_segmenter(
        cfg.model.name, num_classes=cfg.model.num_classes, multi_level=cfg.model.multi_level,
        aspp_branches=cfg.model.aspp_branches, bn_mode=cfg.model.bn_mode,
    )
    discs: dict[str, nn.Module] = {}
    if method.disc_input is not None:
        for lvl in level_names(cfg.method.levels):
            channels = method.disc_input.channels(seg, cfg.model.num_classes, lvl)
            discs[lvl] = models.build_discriminator(method.disc_input.kind, channels,
                                                    cfg.method.disc_ndf,
                                                    stride1_layers=cfg.method.disc_patch_stride1)
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
        return losses.seg_cross_entropy_masked(losses.upcast(logits), labels)
    return losses.seg_cross_entropy(losses.upcast(logits), labels)


def _forward(seg: nn.Module, image: torch.Tensor, cfg: TrainConfig) -> SegOutput:
    """The forward pass with every level's logits upsampled to the input size."""
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=cfg.run.amp):
        out = seg(image)
    return out.upsampled(tuple(image.shape[-2:]), cfg.run.align_corners)


def _taps(method: Method, out: SegOutput, levels: str) -> dict[str, torch.Tensor]:
    """What the discriminators' own step will see of this pass, detached."""
    if method.disc_input is None:
        return {}
    return {lvl: method.disc_input.tap(out, lvl).detach() for lvl in level_names(levels)}


def _source_stage(seg, image, label, *, cfg: TrainConfig, method: Method):
    """Source forward, weighted segmentation losses, and the discriminators' share of the pass."""
    mcfg = cfg.method
    out = _forward(seg, image, cfg)
    terms = {"seg_main": mcfg.lambda_seg_main * _segmentation_loss(cfg, out.main, label)}
    if out.aux is not None:
        # Also at weight 0 (AdaptSegNet single-level: --lambda-seg 0 with both heads built): the
        # aux head then gets a zero gradient, not none, so SGD's weight decay and momentum
        # still move it, as in the official loop (model.multi_level: false drops the head).
        terms["seg_aux"] = mcfg.lambda_seg_aux * _segmentation_loss(cfg, out.aux, label)
    return terms, _taps(method, out, mcfg.levels)


def _target_stage(seg, discs, image, source_prior, *, cfg: TrainConfig, method: Method):
    """Target forward and the method's target terms (discriminators frozen by the caller)."""
    if method.target_loss is None:
        # Batch norm in training mode normalises with, and updates running statistics from,
        # the target batch; no loss and no gradient (the batch-norm control).
        if method.target_term == "forward_only":
            with torch.no_grad():
                _forward(seg, image, cfg)
        return {}, {}
    out = _forward(seg, image, cfg)
    with torch.autocast(image.device.type, torch.bfloat16, enabled=cfg.run.amp):
        terms = methods.target_losses(method, cfg.method, out, discs, source_prior)
    return terms, _taps(method, out, cfg.method.levels)


def _disc_stage(discs, taps, domain: str, *, cfg: TrainConfig, method: Method):
    """Each discriminator's loss on one domain's detached outputs (source 0, target 1), / 2,
    and, with ``run.diagnostics``, the discriminators' outputs (None without)."""
    inputs = {lvl: method.disc_input.view(x) for lvl, x in taps.items()}
    seen = {} if cfg.run.diagnostics else None
    with torch.autocast(next(iter(taps.values())).device.type, torch.bfloat16, enabled=cfg.run.amp):
        # Looked up at call time (methods.<name>), so that tests can observe the
        # discriminators' losses.
        terms = methods.discriminator_losses(method, cfg.method, discs, inputs, domain, logits=seen)
    return terms, seen


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
    method = methods.get(cfg.method.name)
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


# What ``run.diagnostics`` adds to a step's logged terms (the update itself is unchanged):
DIAGNOSTICS = {
    "diag_grad_source": "L2 norm of the gradient of the source terms w.r.t. the segmenter",
    "diag_grad_target": "L2 norm of the gradient of the target terms w.r.t. the segmenter",
    "diag_dacc_<level>_<domain>": "share of a domain's output cells the discriminator gets right",
}


def _gradients(module: nn.Module) -> list[torch.Tensor]:
    """Copies of a module's gradients (zeros where a parameter has none yet)."""
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in module.parameters() if p.requires_grad]


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of several tensors together, in their precision (half precisions in fp32)."""
    wide = [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in wide]))


def _disc_accuracy(logits: dict[str, torch.Tensor], domain: str) -> dict[str, torch.Tensor]:
    """Each discriminator's accuracy on one domain's outputs as it saw them in this step (its
    own outputs in its loss, before its update): the share of cells on the domain's side
    (logit < 0 for source, labelled 0; > 0 for target)."""
    out = {}
    for lvl, d_out in logits.items():
        right = d_out < 0 if domain == "src" else d_out > 0
        out[f"diag_dacc_{lvl}_{domain}"] = right.to(d_out.dtype).mean()
    return out


def train_step(
    state: TrainState,
    src: Batch,
    tgt: Batch | None,
    cfg: TrainConfig,
    source_prior: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One iteration of any method; returns the detached (weighted) losses by name."""
    method = methods.get(cfg.method.name)
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
    if method.source_transform is not None:
        src = method.source_transform(src, tgt)

    logged: dict[str, torch.Tensor] = {}
    taps_src: dict[str, torch.Tensor] = {}
    taps_tgt: dict[str, torch.Tensor] = {}
    source_grads = None
    with frozen(state.discs.values()):
        seg_terms, taps_src = stages.source(stages.seg, src.image, src.label)
        sum(seg_terms.values()).backward()  # frees the source graph before the target pass
        logged.update(seg_terms)
        if cfg.run.diagnostics:
            source_grads = _gradients(state.seg)
            logged["diag_grad_source"] = _norm(source_grads)
        if method.uses_target:
            tgt_terms, taps_tgt = stages.target(stages.seg, stages.discs, tgt.image, source_prior)
            if tgt_terms:
                sum(tgt_terms.values()).backward()
                logged.update(tgt_terms)
                if source_grads is not None:
                    logged["diag_grad_target"] = _norm(
                        [g - s for g, s in zip(_gradients(state.seg), source_grads, strict=True)])

    if method.has_discriminator:
        # Source then target, each with its own backward, so the two graphs never coexist.
        for taps, domain in ((taps_src, "src"), (taps_tgt, "tgt")):
            d_terms, d_logits = stages.disc(stages.discs, taps, domain)
            sum(d_terms.values()).backward()
            logged.update(d_terms)
            if d_logits is not None:
                logged.update(_disc_accuracy(d_logits, domain))
        del taps_src, taps_tgt

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
