"""Verify a GTA5 download and convert its labels to train ids, once, offline.

    python data_scripts/prepare_gta5.py --root data/GTA5 [--exclude-mismatched] [--workers 2]

Expects <root>/images/NNNNN.png and <root>/labels/NNNNN.png (24,966 pairs, from
https://download.visinf.tu-darmstadt.de/data/from_games/). Writes labels/NNNNN_labelTrainIds.png
and <root>/segda_prepare_report.json (counts, image/label size mismatches and what was done
with them, per-file class pixel counts). No SHA-256 is published for the GTA5 archives; with
--archives DIR the script records the sums of your zips in the report.
"""

import argparse
import sys

from segda.data import gta5
from segda.data.real import DatasetError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="GTA5 folder holding images/ and labels/")
    p.add_argument("--exclude-mismatched", action="store_true",
                   help="drop pairs whose label size differs from the image (default: resize "
                   "the label with nearest neighbour to the image size)")
    p.add_argument("--allow-partial", action="store_true",
                   help="convert the pairs present instead of requiring all 24,966")
    p.add_argument("--strict-ids", action="store_true",
                   help="fail on label ids > 33 instead of mapping them to ignore")
    p.add_argument("--overwrite", action="store_true", help="convert again even if done")
    p.add_argument("--workers", type=int, default=1, help="processes for the conversion")
    p.add_argument("--archives", default=None, help="folder with the downloaded zips to hash")
    args = p.parse_args(argv)
    try:
        gta5.prepare(args.root, exclude_mismatched=args.exclude_mismatched,
                     overwrite=args.overwrite, strict_ids=args.strict_ids,
                     allow_partial=args.allow_partial, workers=args.workers,
                     archives=args.archives)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
