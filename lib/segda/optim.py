"""Optimizers and the poly learning-rate schedule, built in one place.

Segmenter: SGD (official: lr 2.5e-4, momentum 0.9, weight decay 5e-4) with two groups, the
backbone at ``lr`` and the classifier heads at ``head_lr_mult * lr`` (10x), or Adam for the
embedded benchmark. Discriminators: Adam (lr 1e-4, betas (0.9, 0.99)). Every group follows
``lr * (1 - it / max_iters) ** power``.

The official backbone group is built by walking ``module.modules()`` of conv1, bn1 and
layer1..4 and yielding each module's *recursive* ``parameters()``, so a tensor is listed once
per ancestor: for ResNet-101, 314 entries for 104 tensors (most 3 times, downsample convs 4
times). PyTorch steps a tensor once per listing, so the backbone's effective step is about 3x
the nominal learning rate (official_facts section 1.3). ``param_groups="official"`` builds that
same list (and uses the single-tensor SGD loop, whose effect matches the PyTorch-0.4 loop the
papers used: x3.09 for three listings, x4.14 for four, on a constant gradient); it cannot be
bit-exact with PyTorch 0.4. ``param_groups="unique"`` lists each tensor once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import nn

from segda.config import OptimConfig


def official_backbone_params(model: nn.Module) -> Iterator[nn.Parameter]:
    """The official 1x group, duplicates included (see module docstring)."""
    for root in model.backbone_roots():
        for module in root.modules():
            for p in module.parameters():
                if p.requires_grad:
                    yield p


def unique_params(params) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def head_params(model: nn.Module) -> list[nn.Parameter]:
    return [p for head in model.head_roots() for p in head.parameters() if p.requires_grad]


def build_segmenter_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    backbone = list(official_backbone_params(model))
    if cfg.param_groups == "unique":
        backbone = unique_params(backbone)
    groups = [
        {"params": backbone, "lr": cfg.lr, "lr_mult": 1.0},
        {"params": head_params(model), "lr": cfg.lr * cfg.head_lr_mult, "lr_mult": cfg.head_lr_mult},
    ]
    with warnings.catch_warnings():
        # The duplicates are the point of the "official" mode; torch warns about them.
        warnings.filterwarnings("ignore", message=".*duplicate parameters.*")
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                foreach=False,
            )
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.adam_betas, weight_decay=0.0)


def build_discriminator_optimizer(disc: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        [{"params": list(disc.parameters()), "lr": cfg.lr_disc, "lr_mult": 1.0}],
        lr=cfg.lr_disc, betas=cfg.disc_betas,
    )


def poly_lr(base_lr: float, it: int, max_iters: int, power: float) -> float:
    """``base_lr * (1 - it / max_iters) ** power`` (the official ``lr_poly``)."""
    return base_lr * (1 - it / max_iters) ** power


def set_poly_lr(opt: torch.optim.Optimizer, base_lr: float, it: int, cfg: OptimConfig) -> float:
    """Set every group to the poly value at iteration ``it`` times its ``lr_mult``."""
    lr = poly_lr(base_lr, it, cfg.max_iters, cfg.poly_power)
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    return lr
