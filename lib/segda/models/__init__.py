"""Segmenters, discriminators and official-checkpoint loading.

>>> model = build_segmenter("small", num_classes=19, multi_level=True)
>>> out = model(images)            # SegOutput(main, aux, features, aux_features)
>>> disc = build_discriminator("output", in_channels=19)
"""

from __future__ import annotations

import importlib

from torch import nn

from segda.models.outputs import SegOutput

# name -> "module:class"; resolved on use so that importing segda.models stays cheap.
SEGMENTERS: dict[str, str] = {
    "small": "segda.models.small:SmallDilatedSegmenter",
    "deeplabv2_resnet101": "segda.models.deeplabv2:DeepLabV2ResNet101",
    "deeplab_vgg16": "segda.models.vgg:DeepLabVGG16",
}

DISCRIMINATORS: dict[str, str] = {
    "output": "segda.models.discriminators:FCDiscriminator",
    "feature": "segda.models.discriminators:FeatureDiscriminator",
}


def _resolve(table: dict[str, str], name: str, what: str) -> type:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(table)}")
    module_name, cls_name = table[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def build_segmenter(
    name: str,
    num_classes: int = 19,
    multi_level: bool = True,
    aspp_branches: int = 4,
    bn_mode: str = "train",
) -> nn.Module:
    """Build a segmenter whose forward returns a :class:`SegOutput`.

    Args:
        name: ``"deeplabv2_resnet101"`` (official ResNet-101 DeepLab-v2), ``"deeplab_vgg16"``
            (AdaptSegNet's VGG-16 DeepLab, single-level) or ``"small"`` (CPU model).
        multi_level: build the auxiliary head on layer3 (``layer5``) as well as the main head.
        aspp_branches: how many of the four dilated head branches are summed: 4 (ADVENT, the
            fix) or 2 (AdaptSegNet's code and released checkpoints).
        bn_mode: ``"train"`` (official: batch statistics, running stats updated by every
            forward) or ``"frozen"`` (eval-mode batch norm).
    """
    cls = _resolve(SEGMENTERS, name, "segmenter")
    return cls(
        num_classes=num_classes, multi_level=multi_level, aspp_branches=aspp_branches,
        bn_mode=bn_mode,
    )


def build_discriminator(kind: str, in_channels: int, ndf: int = 64, stride1_layers: int = 0) -> nn.Module:
    """``kind="output"``: the official FC discriminator (softmax or self-information maps);
    ``kind="feature"``: a discriminator on backbone features. ``stride1_layers``: see
    :class:`segda.models.discriminators.FCDiscriminator` (0 = official)."""
    cls = _resolve(DISCRIMINATORS, kind, "discriminator")
    return cls(in_channels, ndf=ndf, stride1_layers=stride1_layers)


def load_checkpoint(model: nn.Module, path, kind: str = "auto", **kwargs):
    """Load an official or segda checkpoint; see :mod:`segda.models.checkpoints`."""
    from segda.models.checkpoints import load_checkpoint as _load

    return _load(model, path, kind=kind, **kwargs)


__all__ = [
    "SEGMENTERS", "DISCRIMINATORS", "SegOutput", "build_segmenter", "build_discriminator",
    "load_checkpoint",
]
