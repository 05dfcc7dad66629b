"""Make a DeepLab-v2 init file from torchvision's ImageNet ResNet-101 (which you download).

The official DeepLab init of AdaptSegNet is no longer online. torchvision's ImageNet ResNet-101
is: download it yourself, then convert it:

    curl -LO https://download.pytorch.org/models/resnet101-63fe2227.pth     # IMAGENET1K_V1
    python data_scripts/convert_torchvision_resnet101.py --input resnet101-63fe2227.pth \
        [--output weights/deeplab_init_torchvision_resnet101.pth]

Under torchvision's own file names (resnet101-63fe2227.pth, resnet101-cd907fc2.pth) the input's
SHA-256 must start with the digits in its name; other names are converted unchecked. Train from
the output with --set model.init_checkpoint=OUTPUT --set data.normalization=imagenet. It is
an ImageNet-only, approximate init: data_scripts/README.md lists how the two networks differ.
"""

import argparse
import sys

from segda import weights


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="torchvision ResNet-101 .pth (a state_dict)")
    p.add_argument("--output", default=str(weights.DEFAULT_TORCHVISION_INIT),
                   help="the DeepLab-v2 init file to write")
    args = p.parse_args(argv)
    try:
        weights.convert_torchvision_resnet101(args.input, args.output)
    except weights.WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
