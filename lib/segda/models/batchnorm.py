"""Batch-norm handling shared by all segmenters: frozen affine parameters, statistics mode.

The official code freezes BN's affine parameters (``requires_grad=False``) but never puts BN
in eval mode during training, so with batch size 1 each forward pass normalises with that
image's own statistics and updates the running statistics, for source *and* target images.
``bn_mode="train"`` reproduces that; ``bn_mode="frozen"`` keeps BN in eval mode whenever the
model is in training mode, so the running statistics (from the init) are used and never change.
"""

from __future__ import annotations

from torch import nn

BN_MODES = ("train", "frozen")


def check_bn_mode(bn_mode: str) -> str:
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    return bn_mode


def freeze_bn_affine(module: nn.Module) -> None:
    """Stop gradients to every BatchNorm weight and bias under ``module``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters():
                p.requires_grad_(False)


def apply_bn_mode(module: nn.Module, bn_mode: str) -> None:
    """Put BN layers in eval mode when ``bn_mode == "frozen"`` (called after ``.train()``)."""
    if bn_mode == "frozen":
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


class BNModeMixin:
    """Gives a segmenter a ``bn_mode`` that survives ``model.train()``."""

    bn_mode: str = "train"

    def train(self, mode: bool = True):  # type: ignore[override]
        super().train(mode)  # type: ignore[misc]
        if mode:
            apply_bn_mode(self, self.bn_mode)  # type: ignore[arg-type]
        return self
