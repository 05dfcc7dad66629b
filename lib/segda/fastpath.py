"""Fast-path switches: the same iteration, fewer and cheaper kernels.

Every switch is one ``run.*`` config field and can be turned on or off alone; with all of them
off (the defaults, except ``ce_impl``) the step is the reference one.

=====================  ===========================================================  ==========================
switch                 what changes                                                  same result as reference?
=====================  ===========================================================  ==========================
``ce_impl``            ``"ignore_index"``: cross-entropy with ``ignore_index``       yes, up to fp32 rounding
                       instead of the official boolean-mask gather (whose backward
                       is an index_put with a sort)
``amp``                bf16 autocast; losses, softmax and log run in fp32           within bf16 rounding
``channels_last``      NHWC weights and inputs end to end (no layout conversions     yes, up to fp32 rounding
                       inside cuDNN)
``optim_impl``         ``"foreach"`` / ``"fused"``: multi-tensor or fused optimizer  ``foreach``: bitwise on
                       kernels (one launch per round instead of ~4 per tensor)       CPU; ``fused``: rounding
``compile``            ``torch.compile`` of the step's stages: the forward, the      yes, up to fp32 rounding
                       upsampling, the losses and the discriminators, so batch norm
                       (training mode) and the elementwise work fuse into few kernels
``cuda_graphs``        replay of the compiled stages as CUDA graphs (removes launch  same kernels
                       overhead); needs ``compile`` and a CUDA device
=====================  ===========================================================  ==========================

The reference optimizer for the segmenter is the single-tensor SGD loop over the official
parameter listing, in which most backbone tensors appear three or four times and are stepped
once per appearance (:mod:`segda.optim`). :class:`ListingSGD` reproduces that sequence exactly
with multi-tensor kernels; Adam over a duplicated listing is left on the reference optimizer
(see :func:`fast_optimizer`).

Compiled stages are specialised to the config and the input sizes (``dynamic=False``); torch
keeps a few such variants per stage, so a long-lived process that trains many configurations
with ``run.compile`` should call ``torch.compiler.reset()`` between them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.sgd import sgd as sgd_update

OPTIM_IMPLS = ("reference", "foreach", "fused")


class ListingSGD(torch.optim.SGD):
    """SGD that steps a tensor listed ``k`` times in its group ``k`` times, with multi-tensor kernels.

    The reference loop (``torch.optim.SGD(foreach=False)``) visits the listing in order; for a
    tensor listed ``k`` times it applies ``d = g + wd * p; buf = m * buf + d; p -= lr * buf``
    ``k`` times in a row, each time with the parameter the previous visit left and the shared
    momentum buffer. On a tensor's first step every visit starts a *fresh* buffer ``buf = d``
    (the loop reads ``None`` from the state for each listing) and the state keeps the last one.

    The updates of different tensors are independent, so the same per-tensor sequence is
    obtained by *rounds*: round ``r`` steps, in one multi-tensor (``impl="foreach"``) or fused
    (``impl="fused"``) call, every tensor listed at least ``r`` times. With the official
    ResNet-101 listing that is 4 rounds instead of 314 single-tensor updates.

    On CPU the foreach kernels run the same per-tensor operations as the reference loop, so the
    result is bitwise identical; on CUDA, and with ``impl="fused"``, the arithmetic is the same
    but may round differently in the last bit. The state dict has the format of
    :class:`torch.optim.SGD`, so checkpoints move freely between the two. Supports the official
    options only: no dampening, no Nesterov, no maximize.
    """

    def __init__(self, params, *, impl: str = "foreach", **kwargs) -> None:
        if impl not in ("foreach", "fused"):
            raise ValueError(f"impl must be 'foreach' or 'fused', got {impl!r}")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*duplicate parameters.*")
            super().__init__(params, foreach=False, **kwargs)
        for group in self.param_groups:
            if group["dampening"] != 0 or group["nesterov"] or group["maximize"]:
                raise ValueError("ListingSGD supports dampening=0, nesterov=False, maximize=False")
        seen: dict[int, int] = {}
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                if seen.setdefault(id(p), gi) != gi:
                    raise ValueError("a tensor is listed in two groups; use the reference SGD")
        self.impl = impl

    @torch.no_grad()
    def step(self, closure: Callable | None = None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        counts: dict[int, int] = {}
        unique: list[torch.Tensor] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if id(p) not in counts:
                counts[id(p)] = 0
                unique.append(p)
            counts[id(p)] += 1
        if not unique:
            return
        momentum = group["momentum"]
        fresh = {id(p) for p in unique if self.state[p].get("momentum_buffer") is None}
        last_buf: dict[int, torch.Tensor] = {}
        for r in range(1, max(counts.values()) + 1):
            params = [p for p in unique if counts[id(p)] >= r]
            # First-step tensors start a new buffer at every visit, the others update theirs.
            for subset in ([p for p in params if id(p) in fresh],
                           [p for p in params if id(p) not in fresh]):
                if not subset:
                    continue
                bufs = [None if id(p) in fresh else self.state[p]["momentum_buffer"] for p in subset]
                sgd_update(
                    subset, [p.grad for p in subset], bufs,
                    foreach=self.impl == "foreach", fused=self.impl == "fused",
                    weight_decay=group["weight_decay"], momentum=momentum, lr=group["lr"],
                    dampening=0.0, nesterov=False, maximize=False,
                )
                if momentum != 0:
                    for p, b in zip(subset, bufs, strict=True):
                        last_buf[id(p)] = b
        if momentum != 0:
            for p in unique:
                self.state[p]["momentum_buffer"] = last_buf[id(p)]


def _has_duplicates(opt: torch.optim.Optimizer) -> bool:
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    return len(ids) != len(set(ids))


def fast_optimizer(opt: torch.optim.Optimizer, impl: str) -> torch.optim.Optimizer:
    """The optimizer ``opt`` (freshly built, no state yet) with ``impl`` kernels and the same
    groups, hyper-parameters and update.

    * SGD -> :class:`ListingSGD` (handles the official duplicated listing exactly);
    * Adam over unique tensors -> ``torch.optim.Adam(foreach=True)`` or ``(fused=True)``;
    * Adam over a duplicated listing -> ``opt`` unchanged: the reference loop increments the
      shared step counter once per listing and reuses the moments in between, which the
      multi-tensor and fused kernels (one visit per tensor) cannot reproduce.
    """
    if impl == "reference":
        return opt
    if impl not in OPTIM_IMPLS:
        raise ValueError(f"optim_impl must be one of {OPTIM_IMPLS}, got {impl!r}")
    groups = [dict(g) for g in opt.param_groups]
    if type(opt) is torch.optim.SGD:
        for g in groups:
            for key in ("foreach", "fused", "differentiable"):
                g.pop(key, None)
        return ListingSGD(groups, impl=impl)
    if type(opt) is torch.optim.Adam:
        if _has_duplicates(opt):
            return opt
        for g in groups:
            g.pop("foreach", None)
            g.pop("fused", None)
        if impl == "fused":
            return torch.optim.Adam(groups, fused=True)
        return torch.optim.Adam(groups, foreach=True)
    return opt


def check_switches(run, device: torch.device) -> None:
    """Warn about switches that cannot act on this device or without another switch."""
    if run.cuda_graphs and device.type != "cuda":
        warnings.warn(f"run.cuda_graphs has no effect on {device.type}; running without CUDA graphs",
                      stacklevel=3)
    elif run.cuda_graphs and run.compile == "none":
        warnings.warn("run.cuda_graphs needs run.compile (the compiled stages are what is "
                      "captured); running without CUDA graphs", stacklevel=3)


def uses_cuda_graphs(run, device: torch.device) -> bool:
    return bool(run.cuda_graphs and run.compile != "none" and device.type == "cuda")


def compile_options(run, device: torch.device) -> dict:
    """Inductor options of ``run.compile``'s mode, with CUDA graphs set by ``run.cuda_graphs``."""
    from torch._inductor import list_mode_options

    options = dict(list_mode_options(run.compile))
    options["triton.cudagraphs"] = uses_cuda_graphs(run, device)
    return options


def compiled(fn: Callable, run, device: torch.device) -> Callable:
    """``fn`` (a function or module) compiled as ``run`` asks, or ``fn`` itself.

    Shapes are static (``dynamic=False``): source and target sizes each get their own graph.
    """
    if run.compile == "none":
        return fn
    if run.compile_backend == "inductor":
        return torch.compile(fn, backend="inductor", dynamic=False,
                             options=compile_options(run, device))
    return torch.compile(fn, backend=run.compile_backend, dynamic=False)


def compiled_module(module: nn.Module, run, device: torch.device) -> nn.Module:
    """A compiled wrapper that shares ``module``'s parameters (its state dict is untouched)."""
    return compiled(module, run, device)  # type: ignore[return-value]
