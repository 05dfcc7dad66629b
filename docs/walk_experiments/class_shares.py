"""Class shares of the embedded benchmark's target at several ``data.balance_shift`` levels.

Prints, per level, the pixel share of each used class on the target's val split next to the
source's, and two distances between the target's and the source's shares: total variation
(half the L1 distance, the share of pixels that would have to change class) and the largest
single-class difference. The source never depends on the level (checked here too).

    PYTHONPATH=lib python docs/walk_experiments/class_shares.py [--items 300]
"""

from __future__ import annotations

import argparse

import numpy as np

from segda.data.stats import class_frequencies
from segda.data.synthetic import SyntheticConfig, SyntheticStreetScenes
from segda.labels import CLASS_NAMES

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=300, help="val images per domain")
    args = parser.parse_args()
    # The benchmark's sizes (data.source_size 128x64) and appearance (data.palette_shift 0.3,
    # data.light_shift 0.3): the SyntheticConfig defaults except the size.
    base = SyntheticConfig(height=64, width=128)
    source = class_frequencies(SyntheticStreetScenes("source", "val", base), args.items)
    used = [int(c) for c in base.classes]
    print("level  " + " ".join(f"{CLASS_NAMES[c][:8]:>8}" for c in used) + "      TV  max|d|")
    print("source " + " ".join(f"{100 * source[c]:8.1f}" for c in used))
    for level in LEVELS:
        config = SyntheticConfig(height=64, width=128, balance_shift=level)
        again = class_frequencies(SyntheticStreetScenes("source", "val", config), args.items)
        assert np.array_equal(again, source), "the source must not depend on balance_shift"
        target = class_frequencies(SyntheticStreetScenes("target", "val", config), args.items)
        diff = target - source
        print(f"{level:<6} " + " ".join(f"{100 * target[c]:8.1f}" for c in used)
              + f"  {50 * np.abs(diff).sum():6.1f}  {100 * np.abs(diff).max():6.1f}")


if __name__ == "__main__":
    main()
