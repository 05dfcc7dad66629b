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

import sys

from segda.data import cityscapes, prepare_cli


def main(argv=None) -> int:
    return prepare_cli.main(cityscapes, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
