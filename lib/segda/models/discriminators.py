"""Domain discriminators: the official output-space one and a feature-level one."""

from __future__ import annotations

from torch import nn

from segda.config import ConfigError


class FCDiscriminator(nn.Sequential):
    """Fully-convolutional discriminator of AdaptSegNet and ADVENT (identical in both).

    Five 4x4 stride-2 convolutions ``C -> ndf -> 2ndf -> 4ndf -> 8ndf -> 1`` with LeakyReLU(0.2)
    between them; no normalisation, no sigmoid (it returns logits), output at 1/32 of the input.
    Built as an ``nn.Sequential`` so its keys are ADVENT's (``0.weight``, ``2.weight``, ...,
    ``8.bias``); AdaptSegNet's ``conv1..conv4/classifier`` names are mapped by
    :func:`segda.models.checkpoints.load_checkpoint`.

    Shape: ``(N, C, H, W) -> (N, 1, H/32, W/32)``.

    ``stride1_layers`` (0 = official) runs that many of the last five convolutions at stride 1
    with "same" padding, so the output is at ``1/2**(5 - stride1_layers)`` of the input: the
    official network returns 32x16 verdicts on a 1024x512 image but 4x2 on a 128x64 one, each
    seeing most of the image; with ``stride1_layers=3`` a 128x64 map gets 32x16 verdicts again.
    The layers, their widths and their keys are unchanged (only strides and padding differ).
    """

    NUM_CONVS = 5

    def __init__(self, in_channels: int, ndf: int = 64, stride1_layers: int = 0) -> None:
        if not 0 <= stride1_layers <= self.NUM_CONVS:
            raise ConfigError(f"method.disc_patch_stride1 = {stride1_layers}: the discriminator has "
                             f"{self.NUM_CONVS} convolutions; choose 0 (official) to {self.NUM_CONVS}")
        widths = [in_channels, ndf, ndf * 2, ndf * 4, ndf * 8, 1]
        first_stride1 = self.NUM_CONVS - stride1_layers
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if i >= first_stride1:
                # A 4x4 kernel at stride 1 keeps the size only with asymmetric padding (1, 2),
                # which padding="same" applies.
                layers.append(nn.Conv2d(cin, cout, 4, stride=1, padding="same"))
            else:
                layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1))
            if i < self.NUM_CONVS - 1:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
        super().__init__(*layers)


class FeatureDiscriminator(nn.Sequential):
    """Discriminator on backbone feature maps ("FCNs in the wild"-style feature alignment).

    Neither official repository ships one; AdaptSegNet's authors describe the baseline as a
    discriminator on the features before the classifier (AdaptSegNet#41, #67). Backbone
    features are already at 1/8 (or 1/4) resolution with many channels, so this design first
    reduces channels with a 1x1 conv, then applies two 3x3 stride-2 convs and a 1x1 classifier:
    a patch-level domain classifier whose output keeps a spatial layout like the FC one.

    Shape: ``(N, C, h, w) -> (N, 1, ceil(h/4), ceil(w/4))``.
    """

    def __init__(self, in_channels: int, ndf: int = 64, stride1_layers: int = 0) -> None:
        if stride1_layers:
            raise ConfigError(f"method.disc_patch_stride1 = {stride1_layers}: it applies to the "
                             "output-space discriminator only; set it to 0 for feature-level "
                             "alignment")
        super().__init__(
            nn.Conv2d(in_channels, ndf * 4, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 4, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 1),
        )

