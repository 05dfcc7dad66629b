"""Verify a GTA5 download and convert its labels to train ids, once, offline.

    python data_scripts/prepare_gta5.py --root data/GTA5 [--exclude-mismatched] [--workers 2]

Expects <root>/images/NNNNN.png and <root>/labels/NNNNN.png (24,966 pairs, from
https://download.visinf.tu-darmstadt.de/data/from_games/). Writes labels/NNNNN_labelTrainIds.png
and <root>/segda_prepare_report.json (counts, image/label size mismatches and what was done
with them, per-file class pixel counts). No SHA-256 is published for the GTA5 archives; with
--archives DIR the script records the sums of your zips in the report.
"""

import sys

from segda.data import gta5, prepare_cli


def main(argv=None) -> int:
    return prepare_cli.main(gta5, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
