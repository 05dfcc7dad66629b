"""DeepLab-v2 classifier heads: parallel dilated 3x3 convolutions whose outputs are summed."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierModule(nn.Module):
    """Sum of parallel dilated 3x3 convolutions (DeepLab-v2's "ASPP" head, no BN, no ReLU).

    Args:
        in_channels: channels of the feature map.
        num_classes: output channels.
        dilations: one branch per dilation (padding equals the dilation, so sizes are kept).
        active_branches: how many branches the forward pass sums. AdaptSegNet's released code
            returns inside its loop, so only the first two branches (dilations 6 and 12) are
            ever used; the others exist in the state_dict but get no gradient. ``None`` sums all.
        init_std: conv weights are drawn from N(0, init_std) as in both official repositories;
            biases keep PyTorch's default init.

    Key names follow the official ``conv2d_list.{i}.{weight,bias}``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dilations: tuple[int, ...] = (6, 12, 18, 24),
        active_branches: int | None = None,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if active_branches is not None and not 1 <= active_branches <= len(dilations):
            raise ValueError(f"active_branches must be in 1..{len(dilations)}, got {active_branches}")
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True)
            for d in dilations
        )
        self.active_branches = active_branches or len(dilations)
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, 0.0, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1 : self.active_branches]:
            out = out + conv(x)
        return out
