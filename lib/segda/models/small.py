"""A small dilated CNN with DeepLab-v2's two-level head layout, for CPU work.

It keeps the structure the adaptation methods rely on (a dilated backbone, an auxiliary head on
the second-to-last stage, a main head on the last stage, heads that sum dilated convolutions)
at about 0.5 M parameters, so every method trains in minutes on a laptop CPU at 64x128.
Output stride 4. Module names mirror the official model (``layer5`` = aux head on layer3,
``layer6`` = main head on layer4). Unlike the DeepLab models it trains from scratch, so its
batch-norm affine parameters are trainable.
"""

from __future__ import annotations

import torch
from torch import nn

from segda.models.batchnorm import BNModeMixin, check_bn_mode
from segda.models.heads import ClassifierModule
from segda.models.outputs import SegOutput


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a shortcut (1x1 projection when the width or stride changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class SmallDilatedSegmenter(BNModeMixin, nn.Module):
    """Small two-level segmenter: stride-4 dilated backbone, aux head on layer3, main on layer4."""

    def __init__(
        self,
        num_classes: int = 19,
        multi_level: bool = True,
        aspp_branches: int = 4,
        bn_mode: str = "train",
        width: int = 24,
    ) -> None:
        super().__init__()
        self.bn_mode = check_bn_mode(bn_mode)
        self.multi_level = multi_level
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _conv_bn_relu(w, w)
        self.layer2 = nn.Sequential(ResidualBlock(w, 2 * w, stride=2), ResidualBlock(2 * w, 2 * w))
        # One residual block per dilated stage keeps a training iteration (batch 8, 64x128)
        # well under a second on one CPU core.
        self.layer3 = nn.Sequential(ResidualBlock(2 * w, 4 * w, dilation=2))
        self.layer4 = nn.Sequential(ResidualBlock(4 * w, 4 * w, dilation=4))
        # Dilations scaled down from DeepLab's 6/12/18/24 to the small output maps (16x32).
        branches = aspp_branches
        if multi_level:
            self.layer5 = ClassifierModule(4 * w, num_classes, (1, 2, 4, 6), branches)
        self.layer6 = ClassifierModule(4 * w, num_classes, (1, 2, 4, 6), branches)
        self.feature_channels = 4 * w
        self.aux_feature_channels = 4 * w
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m not in self._head_convs():
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.train()  # applies bn_mode from construction on

    def _head_convs(self) -> set[nn.Module]:
        return {m for head in self.head_roots() for m in head.modules()}

    def backbone_roots(self) -> list[nn.Module]:
        """Backbone modules, in the order the official 1x learning-rate group walks them."""
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]

    def head_roots(self) -> list[nn.Module]:
        """Classifier heads (the official 10x learning-rate group)."""
        return [self.layer5, self.layer6] if self.multi_level else [self.layer6]

    def forward(self, x: torch.Tensor) -> SegOutput:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        aux_features = self.layer3(x)
        features = self.layer4(aux_features)
        aux = self.layer5(aux_features) if self.multi_level else None
        return SegOutput(
            main=self.layer6(features), aux=aux, features=features, aux_features=aux_features
        )
