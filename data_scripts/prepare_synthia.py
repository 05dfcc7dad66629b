"""Verify SYNTHIA-RAND-CITYSCAPES and convert its 16-bit labels to Cityscapes train ids.

    python data_scripts/prepare_synthia.py --root data/SYNTHIA [--workers 2]

Expects <root>/RGB/*.png and <root>/GT/LABELS/*.png (9,400 pairs). The class id is the first
channel of the 16-bit label PNG (read with torchvision, not PIL, which truncates 16-bit
colour PNGs). Mapping SYNTHIA id -> train id: DAFormer's table (lhoyer/DAFormer,
tools/convert_datasets/synthia.py). Writes GT/LABELS/*_labelTrainIds.png and
<root>/segda_prepare_report.json.
"""

import argparse
import sys

from segda.data import synthia
from segda.data.real import DatasetError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder holding RGB/ and GT/LABELS/")
    p.add_argument("--allow-partial", action="store_true",
                   help="convert the pairs present instead of requiring all 9,400")
    p.add_argument("--strict-ids", action="store_true",
                   help="fail on class ids > 22 instead of mapping them to ignore")
    p.add_argument("--overwrite", action="store_true", help="convert again even if done")
    p.add_argument("--workers", type=int, default=1, help="processes for the conversion")
    args = p.parse_args(argv)
    try:
        synthia.prepare(args.root, overwrite=args.overwrite, strict_ids=args.strict_ids,
                        allow_partial=args.allow_partial, workers=args.workers)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
