"""The named outputs every segmenter returns."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


def upsample_logits(
    logits: torch.Tensor, size: tuple[int, int], align_corners: bool = True
) -> torch.Tensor:
    """Bilinear upsampling of logits (or any map) to ``size`` = (H, W).

    Both official loops upsample the heads' logits to the input size before every loss and
    before the discriminator, and the official evaluation upsamples them to the label size,
    always with ``align_corners=True`` (the faithful default; ``run.align_corners`` switches).
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


@dataclass
class SegOutput:
    """What a segmenter's forward pass returns.

    Attributes:
        main: logits of the main head (on the last backbone stage), ``(N, C, h, w)``.
        aux: logits of the auxiliary head (on the stage before), or ``None`` when single-level.
        features: the last backbone feature map, the input of the main head; the feature-level
            discriminator sees it.
        aux_features: the feature map the auxiliary head sees (always computed; used by the
            feature-level discriminator in multi-level mode).
    """

    main: torch.Tensor
    aux: torch.Tensor | None
    features: torch.Tensor
    aux_features: torch.Tensor

    def logits(self, level: str) -> torch.Tensor:
        """Logits of one level, ``"main"`` or ``"aux"``."""
        out = self.main if level == "main" else self.aux
        if out is None:
            raise ValueError(f"this segmenter has no {level!r} head (single-level model)")
        return out

    def feature_map(self, level: str) -> torch.Tensor:
        """Backbone features feeding the head of one level."""
        return self.features if level == "main" else self.aux_features

    def upsampled(self, size: tuple[int, int], align_corners: bool = True) -> SegOutput:
        """The same output with the logits of every level upsampled to ``size`` (H, W);
        the feature maps are kept as they are."""
        main = upsample_logits(self.main, size, align_corners)
        aux = None if self.aux is None else upsample_logits(self.aux, size, align_corners)
        return replace(self, main=main, aux=aux)
