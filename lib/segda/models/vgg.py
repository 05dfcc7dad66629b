"""AdaptSegNet's DeepLab VGG-16 (``DeeplabVGG``), rebuilt without torchvision weights.

VGG-16's convolutions with pool4 and pool5 removed, conv5 dilated by 2, and the fully
connected fc6/fc7 replaced by dilated 3x3 convolutions (1024 channels, dilation 4; fc7 is 3x3,
not 1x1, and there is no dropout). Only pool1..pool3 remain (2x2, floor mode), so the output
stride is 8: 512x1024 -> 64x128, 720x1280 -> 90x160.

The ``state_dict`` keys equal the official ones (``features.{0,2,...,27}`` VGG convs,
``features.29`` fc6, ``features.31`` fc7, ``classifier.conv2d_list.{0..3}``: 38 tensors),
so AdaptSegNet's released ``GTA2Cityscapes_vgg`` checkpoint loads strictly (with
``aspp_branches=2``). AdaptSegNet has no VGG training script; this model is for evaluation.
"""

from __future__ import annotations

import torch
from torch import nn

from segda.models.batchnorm import BNModeMixin, check_bn_mode
from segda.models.heads import ClassifierModule
from segda.models.outputs import SegOutput

# VGG-16 configuration D: conv widths, "M" = 2x2 max-pool. pool4 and pool5 are left out.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, 512, 512, 512,
)
_CONV5_FIRST = 10  # index of conv5_1 among the 13 convs; conv5 gets dilation 2


def _vgg_features() -> nn.Sequential:
    """VGG-16 trunk plus fc6/fc7; indices match the official ``features.*`` keys."""
    layers: list[nn.Module] = []
    cin, n_conv = 3, 0
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
            continue
        d = 2 if n_conv >= _CONV5_FIRST else 1
        layers += [nn.Conv2d(cin, v, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
        cin, n_conv = v, n_conv + 1
    for cout in (1024, 1024):  # fc6, fc7 as dilated 3x3 convolutions
        layers += [nn.Conv2d(cin, cout, 3, padding=4, dilation=4), nn.ReLU(inplace=True)]
        cin = cout
    return nn.Sequential(*layers)


class DeepLabVGG16(BNModeMixin, nn.Module):
    """AdaptSegNet's single-level DeepLab VGG-16 segmenter (output stride 8).

    Args:
        num_classes: output channels of the head.
        multi_level: must be ``False``; AdaptSegNet's VGG model has a single head. The argument
            exists so every segmenter shares one constructor signature.
        aspp_branches: head branches summed: 2 for AdaptSegNet's released VGG checkpoint (its
            early-return bug), 4 to sum all of them.
        bn_mode: accepted and validated for a uniform interface; the model has no batch norm.

    Shape: ``(N, 3, H, W) -> SegOutput`` with ``main (N, num_classes, H//8, W//8)``,
    ``aux=None``, ``features`` = fc7 output ``(N, 1024, H//8, W//8)`` (the head's input) and
    ``aux_features`` = conv5_3 output ``(N, 512, H//8, W//8)`` (before fc6).
    """

    def __init__(
        self,
        num_classes: int = 19,
        multi_level: bool = False,
        aspp_branches: int = 4,
        bn_mode: str = "train",
    ) -> None:
        super().__init__()
        if multi_level:
            raise ValueError(
                "DeepLabVGG16 is single-level (AdaptSegNet's VGG model has one head); "
                "pass multi_level=False"
            )
        self.bn_mode = check_bn_mode(bn_mode)
        self.multi_level = False
        self.feature_channels = 1024
        self.aux_feature_channels = 512
        self.features = _vgg_features()
        self.classifier = ClassifierModule(1024, num_classes, (6, 12, 18, 24), aspp_branches)
        # torchvision's VGG init for the VGG convs; fc6/fc7 keep PyTorch's default conv init as
        # in AdaptSegNet, and the head keeps its N(0, 0.01). All are replaced by a checkpoint.
        for m in list(self.features)[: self._fc6_index()]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def _fc6_index(self) -> int:
        return len(self.features) - 4

    def backbone_roots(self) -> list[nn.Module]:
        """Backbone modules (the official 1x learning-rate group)."""
        return [self.features]

    def head_roots(self) -> list[nn.Module]:
        """Classifier head (the official 10x learning-rate group)."""
        return [self.classifier]

    def forward(self, x: torch.Tensor) -> SegOutput:
        split = self._fc6_index()
        aux_features = self.features[:split](x)
        features = self.features[split:](aux_features)
        return SegOutput(
            main=self.classifier(features), aux=None, features=features,
            aux_features=aux_features,
        )
