"""Verify a Cityscapes download against the official lists and write train-id labels.

Download first (needs an account at https://www.cityscapes-dataset.com; csDownload comes with
`pip install cityscapesscripts` and checks the MD5 of each package):

    csDownload -d data/Cityscapes leftImg8bit_trainvaltest.zip gtFine_trainvaltest.zip
    (cd data/Cityscapes && unzip -q leftImg8bit_trainvaltest.zip && unzip -q gtFine_trainvaltest.zip)
    python data_scripts/prepare_cityscapes.py --root data/Cityscapes

Writes gtFine/<split>/<city>/*_gtFine_labelTrainIds.png from *_gtFine_labelIds.png with
cityscapesscripts' label table (--from-polygons renders them from the polygon JSON files with
cityscapesscripts' json2labelImg, as its createTrainIdLabelImgs does), and
<root>/segda_prepare_report.json. Counts: 2975 train and 500 val images.
"""

import argparse
import sys

from segda.data import cityscapes
from segda.data.real import DatasetError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder holding leftImg8bit/ and gtFine/")
    p.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    p.add_argument("--from-polygons", action="store_true",
                   help="render from *_gtFine_polygons.json instead of mapping labelIds")
    p.add_argument("--allow-partial", action="store_true",
                   help="convert the listed files present instead of requiring all")
    p.add_argument("--overwrite", action="store_true", help="convert again even if done")
    args = p.parse_args(argv)
    try:
        cityscapes.prepare(args.root, splits=args.splits, from_polygons=args.from_polygons,
                           overwrite=args.overwrite, allow_partial=args.allow_partial)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
