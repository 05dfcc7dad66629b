"""DeepLab-v2 with a ResNet-101 backbone, exactly as in AdaptSegNet and ADVENT.

Differences from torchvision's ResNet-101 that matter for loading the official weights:

* caffe-style bottleneck: the stride sits on the first 1x1 conv, not on the 3x3 conv;
* the stem max-pool uses ``ceil_mode=True``, so a 512x1024 input gives 65x129 logits;
* layer3 and layer4 keep stride 1 and use dilation 2 and 4 (output stride 8);
* every BatchNorm's affine parameters are frozen, but BN is *not* put in eval mode during
  training (see :mod:`segda.models.batchnorm` and ``bn_mode``).

The ``state_dict`` keys, their order and their shapes equal the official models'
(ADVENT ``get_deeplab_v2`` = AdaptSegNet ``DeeplabMulti``: 640 entries multi-level, 632
single-level), so official checkpoints load strictly; see :mod:`segda.models.checkpoints`.
"""

from __future__ import annotations

import torch
from torch import nn

from segda.models.batchnorm import BNModeMixin, check_bn_mode, freeze_bn_affine
from segda.models.heads import ClassifierModule
from segda.models.outputs import SegOutput

ASPP_DILATIONS = (6, 12, 18, 24)


class Bottleneck(nn.Module):
    """Caffe-style ResNet bottleneck: 1x1 (stride) -> 3x3 (dilation) -> 1x1 (x4 channels).

    The stride is on ``conv1`` because the caffe ResNet the init weights come from put it there;
    torchvision puts it on ``conv2``. Attribute order fixes the ``state_dict`` order.

    Shape: ``(N, inplanes, H, W) -> (N, 4 * planes, ceil(H / stride), ceil(W / stride))``.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=1, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_layer(
    inplanes: int, planes: int, blocks: int, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """One ResNet stage. Only the first block gets the downsample branch and the stride."""
    outplanes = planes * Bottleneck.expansion
    downsample = None
    # The official rule also adds a projection when dilation is 2 or 4, even at equal width;
    # in ResNet-101 every stage's first block needs one anyway, so this only documents it.
    if stride != 1 or inplanes != outplanes or dilation in (2, 4):
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
            nn.BatchNorm2d(outplanes),
        )
    layers = [Bottleneck(inplanes, planes, stride, dilation, downsample)]
    layers += [Bottleneck(outplanes, planes, 1, dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class DeepLabV2ResNet101(BNModeMixin, nn.Module):
    """DeepLab-v2 ResNet-101 segmenter of AdaptSegNet / ADVENT (output stride 8).

    Args:
        num_classes: output channels of both heads.
        multi_level: also build the auxiliary head ``layer5`` on layer3 (1024 channels).
            AdaptSegNet always builds it (its single-level runs just weight it by 0), so load
            AdaptSegNet checkpoints into a multi-level model.
        aspp_branches: how many of the four head branches are summed: 4 (ADVENT) or 2
            (AdaptSegNet's early-return bug; its released checkpoints need 2).
        bn_mode: ``"train"`` (official) or ``"frozen"``; see :mod:`segda.models.batchnorm`.

    Module names are the official ones so that checkpoints load: ``layer5`` is the aux head
    (on layer3), ``layer6`` the main head (on layer4).

    Shape: ``(N, 3, H, W) -> SegOutput`` with ``main``/``aux`` ``(N, num_classes, h, w)``,
    ``features`` ``(N, 2048, h, w)`` and ``aux_features`` ``(N, 1024, h, w)``, where
    ``h = ceil((floor(ceil(H / 2) / 2) + 1) / 2)`` (stem conv, ceil-mode pool, layer2 stride;
    same for ``w``): 512x1024 -> 65x129, 720x1280 -> 91x161.
    """

    def __init__(
        self,
        num_classes: int = 19,
        multi_level: bool = True,
        aspp_branches: int = 4,
        bn_mode: str = "train",
    ) -> None:
        super().__init__()
        self.bn_mode = check_bn_mode(bn_mode)
        self.multi_level = multi_level
        self.feature_channels = 2048
        self.aux_feature_channels = 1024
        # Creation order = state_dict order; it must match the official checkpoints.
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = _make_layer(64, 64, 3)
        self.layer2 = _make_layer(256, 128, 4, stride=2)
        self.layer3 = _make_layer(512, 256, 23, dilation=2)
        self.layer4 = _make_layer(1024, 512, 3, dilation=4)
        if multi_level:
            self.layer5 = ClassifierModule(1024, num_classes, ASPP_DILATIONS, aspp_branches)
        self.layer6 = ClassifierModule(2048, num_classes, ASPP_DILATIONS, aspp_branches)
        self._init_weights()
        freeze_bn_affine(self)
        self.train()  # applies bn_mode from the start, not only after the first .train()

    def _init_weights(self) -> None:
        # Official init: every conv (backbone and heads) from N(0, 0.01), BN to identity.
        # Backbone values are meant to be overwritten by the ImageNet/COCO init checkpoint.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def backbone_roots(self) -> list[nn.Module]:
        """Backbone modules, in the order the official 1x learning-rate group walks them."""
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]

    def head_roots(self) -> list[nn.Module]:
        """Classifier heads (the official 10x learning-rate group)."""
        return [self.layer5, self.layer6] if self.multi_level else [self.layer6]

    def forward(self, x: torch.Tensor) -> SegOutput:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        aux_features = self.layer3(x)
        features = self.layer4(aux_features)
        aux = self.layer5(aux_features) if self.multi_level else None
        return SegOutput(
            main=self.layer6(features), aux=aux, features=features, aux_features=aux_features
        )
