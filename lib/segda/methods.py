"""The adaptation methods as rows of one table, and the one training step they all share.

Methods differ only in the unsupervised target term the segmenter gets and in what the
discriminator sees:

======================  ==============  ==========================  ===========================
method                  target term     discriminator input         paper
======================  ==============  ==========================  ===========================
``source_only``         none            -                           baseline
``source_only_tgt_bn``  forward only    -                           control: batch-norm stats
``feature_adv``         adversarial     backbone features           FCNs-in-the-wild style
``output_adv``          adversarial     softmax                     AdaptSegNet (Tsai 2018)
``minent``              entropy         -                           ADVENT MinEnt (Vu 2019)
``advent``              adversarial     weighted self-information   ADVENT AdvEnt (Vu 2019)
======================  ==============  ==========================  ===========================

``source_only_tgt_bn`` forwards target images in training mode without any loss: batch norm
then normalises with, and accumulates running statistics from, both domains, as every official
adaptation run does. Part of any method's gain comes from that alone, so gains are reported
against it as well as against plain source-only.

Single- vs multi-level is a config value (``method.levels``), not a method. A new method is a
new :class:`Method` row given to :func:`register`: its target loss, what its discriminator sees
(a :class:`DiscInput`) and, optionally, a transform of the source batch that may use the target
batch (FDA-style); ``docs/architecture.md`` shows one of each.

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

The passes are grouped in three stages (source, target, discriminator), plain functions of the
modules and the batch that ``run.compile`` may compile as they are; the other fast-path switches
(:mod:`segda.fastpath`) change kernels and layouts, not this order. In a data-parallel run the
ranks' gradients are averaged between steps 4 and 5 (``TrainState.dist``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from segda import fastpath, losses, models, optim
from segda.config import ConfigError
from segda.models.outputs import SegOutput

if TYPE_CHECKING:
    from segda.config import MethodConfig, TrainConfig


# ------------------------------------------------------------------------ what a method is


@dataclass(frozen=True)
class DiscInput:
    """What a discriminator sees of one forward pass, in two steps.

    ``tap(out, level)`` picks the tensor kept from the pass (``out`` has its logits already
    upsampled to the input size); the discriminator's own step gets it detached. ``view``
    turns it into the discriminator's input. ``kind`` names the discriminator architecture
    (:data:`segda.models.DISCRIMINATORS`) and ``channels(seg, num_classes, level)`` its input
    channels.
    """

    name: str
    kind: str
    tap: Callable[[SegOutput, str], torch.Tensor]
    view: Callable[[torch.Tensor], torch.Tensor]
    channels: Callable[[nn.Module, int, str], int]

    def __str__(self) -> str:
        return self.name


def _logits(out: SegOutput, level: str) -> torch.Tensor:
    return out.logits(level)


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return F.softmax(losses.upcast(logits), dim=1)


def _class_channels(seg: nn.Module, num_classes: int, level: str) -> int:
    return num_classes


def _feature_channels(seg: nn.Module, num_classes: int, level: str) -> int:
    return seg.feature_channels if level == "main" else seg.aux_feature_channels


FEATURES = DiscInput("features", "feature", SegOutput.feature_map, lambda x: x, _feature_channels)
SOFTMAX = DiscInput("softmax", "output", _logits, _softmax, _class_channels)
SELF_INFORMATION = DiscInput(
    "self_information", "output", _logits,
    lambda logits: losses.weighted_self_information(_softmax(logits)), _class_channels,
)


def level_names(levels: str) -> tuple[str, ...]:
    """``"single"`` -> ``("main",)``; ``"multi"`` -> ``("aux", "main")``."""
    return ("main",) if levels == "single" else ("aux", "main")


def _lambda(cfg: MethodConfig, kind: str, level: str) -> float:
    return getattr(cfg, f"lambda_{kind}_{level}")


def disc_input(method: Method, out: SegOutput, level: str) -> torch.Tensor:
    """What ``method``'s discriminator of ``level`` sees of the (upsampled) output ``out``."""
    if method.disc_input is None:
        raise ValueError(f"method {method.name!r} has no discriminator")
    return method.disc_input.view(method.disc_input.tap(out, level))


def entropy_terms(method, cfg: MethodConfig, out: SegOutput, discs) -> dict[str, torch.Tensor]:
    """MinEnt: the normalised entropy of each level's target prediction, times its lambda."""
    return {
        f"ent_{lvl}": _lambda(cfg, "ent", lvl) * losses.entropy_loss(_softmax(out.logits(lvl)))
        for lvl in level_names(cfg.levels)
    }


def adversarial_terms(method, cfg: MethodConfig, out: SegOutput, discs) -> dict[str, torch.Tensor]:
    """Fool the (frozen) discriminators: target predictions labelled as source (0)."""
    return {
        f"adv_{lvl}": _lambda(cfg, "adv", lvl) * losses.gan_loss(
            losses.upcast(discs[lvl](disc_input(method, out, lvl))), losses.SOURCE_DOMAIN,
            cfg.gan_loss,
        )
        for lvl in level_names(cfg.levels)
    }


# (method, method config, upsampled target output, discriminators) -> weighted terms by name
TargetLoss = Callable[..., dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Batch:
    image: torch.Tensor
    label: torch.Tensor | None = None


# (source batch, target batch) -> the source batch the step trains on
SourceTransform = Callable[[Batch, Batch], Batch]


@dataclass(frozen=True)
class Method:
    """One row of the table.

    Attributes:
        name: the ``method.name`` of configs.
        target_term: what the target term is, in words (tables, notebooks): ``"none"``,
            ``"forward_only"``, ``"entropy"``, ``"adversarial"``, or a new method's own name.
        disc_input: what the discriminators see; ``None``: the method has none.
        paper: where the method comes from.
        target_loss: the segmenter's target terms, already weighted by their lambdas
            (``None``: no target loss; with ``target_term="forward_only"`` the target batch is
            still forwarded, without gradient).
        source_transform: changes the source batch using the target batch before the step.
    """

    name: str
    target_term: str
    disc_input: DiscInput | None = None
    paper: str = ""
    target_loss: TargetLoss | None = None
    source_transform: SourceTransform | None = None

    @property
    def uses_target(self) -> bool:
        return self.target_term != "none" or self.source_transform is not None

    @property
    def has_discriminator(self) -> bool:
        return self.disc_input is not None


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("source_only", "none", paper="DeepLab-v2 trained on source only"),
        Method("source_only_tgt_bn", "forward_only", paper="control: target batch-norm statistics"),
        Method("feature_adv", "adversarial", FEATURES, "Hoffman et al. 2016 (FCNs in the wild)",
               adversarial_terms),
        Method("output_adv", "adversarial", SOFTMAX, "Tsai et al., CVPR 2018 (AdaptSegNet)",
               adversarial_terms),
        Method("minent", "entropy", paper="Vu et al., CVPR 2019 (ADVENT, MinEnt)",
               target_loss=entropy_terms),
        Method("advent", "adversarial", SELF_INFORMATION, "Vu et al., CVPR 2019 (ADVENT, AdvEnt)",
               adversarial_terms),
    ]
}


def get(name: str) -> Method:
    """The method called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    if name not in METHODS:
        raise ConfigError(f"'method.name' must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]


def register(method: Method, replace: bool = False) -> Method:
    """Add a method to the table, so that ``method.name`` in a config selects it."""
    if method.name in METHODS and not replace:
        raise ValueError(f"a method called {method.name!r} exists; pass replace=True to change it")
    if method.has_discriminator and method.target_loss is None:
        raise ValueError(f"method {method.name!r} has a discriminator but no target loss")
    METHODS[method.name] = method
    return method


def target_losses(
    method: Method,
    cfg: MethodConfig,
    out_tgt: SegOutput,
    discs: dict[str, nn.Module],
    source_prior: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The segmenter's target terms, *already weighted by their lambdas*: the method's own,
    then ADVENT's class-ratio prior when ``method.lambda_cp > 0``."""
    terms = method.target_loss(method, cfg, out_tgt, discs) if method.target_loss else {}
    if cfg.lambda_cp > 0 and method.target_loss is not None:
        if source_prior is None:
            # The prior is the source split's class shares: the step sees one batch, not the
            # split, so whoever holds the datasets passes it (segda.train.fit does).
            raise ValueError(
                f"method.lambda_cp = {cfg.lambda_cp} (ADVENT's class-ratio prior) needs the source "
                "class prior: pass source_prior=torch.as_tensor(data.source_prior(), "
                "dtype=torch.float32) to segda.methods.train_step, data being the datasets "
                "(segda.train.fit and segda.notebook.train_preset compute it themselves)")
        terms["cp_main"] = cfg.lambda_cp * losses.class_ratio_prior_loss(
            _softmax(out_tgt.main), source_prior, cfg.cp_mu
        )
    return terms


def discriminator_losses(
    method: Method,
    cfg: MethodConfig,
    discs: dict[str, nn.Module],
    d_inputs: dict[str, torch.Tensor],
    domain: str,
    logits: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Each discriminator's loss on one domain's *detached* inputs (source labelled 0, target
    1), halved as in both official loops. The official loop calls this for the source, runs
    backward, then for the target, so the two graphs are never alive together.

    ``logits``: a dict that receives each level's discriminator output, detached (the step's
    diagnostics read their accuracy from it instead of running the discriminators again)."""
    label = losses.SOURCE_DOMAIN if domain == "src" else losses.TARGET_DOMAIN
    terms = {}
    for lvl in level_names(cfg.levels):
        out = losses.upcast(discs[lvl](d_inputs[lvl].detach()))
        if logits is not None:
            logits[lvl] = out.detach()
        terms[f"disc_{lvl}_{domain}"] = 0.5 * losses.gan_loss(out, label, cfg.gan_loss)
    return terms


# -------------------------------------------------------------------------------- the step


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
    method = get(cfg.method.name)
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
    if out.aux is not None and mcfg.lambda_seg_aux > 0:
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
        terms = target_losses(method, cfg.method, out, discs, source_prior)
    return terms, _taps(method, out, cfg.method.levels)


def _disc_stage(discs, taps, domain: str, *, cfg: TrainConfig, method: Method):
    """Each discriminator's loss on one domain's detached outputs (source 0, target 1), / 2,
    and, with ``run.diagnostics``, the discriminators' outputs (None without)."""
    inputs = {lvl: method.disc_input.view(x) for lvl, x in taps.items()}
    seen = {} if cfg.run.diagnostics else None
    with torch.autocast(next(iter(taps.values())).device.type, torch.bfloat16, enabled=cfg.run.amp):
        # Looked up at call time, so that tests can observe the discriminators' losses.
        terms = discriminator_losses(method, cfg.method, discs, inputs, domain, logits=seen)
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
    method = get(cfg.method.name)
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
    method = get(cfg.method.name)
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
