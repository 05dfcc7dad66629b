"""Verify SYNTHIA-RAND-CITYSCAPES and convert its 16-bit labels to Cityscapes train ids.

    python data_scripts/prepare_synthia.py --root data/SYNTHIA [--workers 2]

Expects <root>/RGB/*.png and <root>/GT/LABELS/*.png (9,400 pairs). The class id is the first
channel of the 16-bit label PNG (read with torchvision, not PIL, which truncates 16-bit
colour PNGs). Mapping SYNTHIA id -> train id: DAFormer's table (lhoyer/DAFormer,
tools/convert_datasets/synthia.py). Writes GT/LABELS/*_labelTrainIds.png and
<root>/segda_prepare_report.json.
"""

import sys

from segda.data import prepare_cli, synthia


def main(argv=None) -> int:
    return prepare_cli.main(synthia, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
