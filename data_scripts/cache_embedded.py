"""Render the embedded benchmark once and keep it as .npz files (optional).

The embedded benchmark needs no files: every sample is rendered on the fly from (seed, domain,
split, index). A cache keeps identical samples at hand for other tools, or for machines where
rendering is slow; ``segda.data.synthetic.SyntheticStreetScenes.load(path)`` reads it back.

    python data_scripts/cache_embedded.py --out data/embedded [--height 64 --width 128 --seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segda.data import synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/embedded")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = synthetic.SyntheticConfig(height=args.height, width=args.width, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for domain in synthetic.DOMAINS:
        for split in synthetic.SPLITS:
            path = synthetic.SyntheticStreetScenes(domain, split, config).save_cache(
                out / f"{domain}_{split}.npz"
            )
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
