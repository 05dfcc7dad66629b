"""The named outputs every segmenter returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
