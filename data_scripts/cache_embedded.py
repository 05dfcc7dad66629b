"""Render the embedded benchmark once and keep it as .npz files, which training then reads.

The embedded benchmark needs no files: every sample is rendered on the fly from (seed, domain,
split, index). This script renders every split into <out>/<domain>_<split>.npz. When <out> is
<data.root>/embedded (the default, data/embedded, is where the default data.root looks),
segda.data.registry reads the files instead of rendering, after checking that they hold
exactly what the run's generator config renders (segda.data.embedded_cache); a file written
for another config (size, seed, palette, light or balance shift) or by another version of the
generator is ignored with a warning. Results are the same with or without the cache.

    python data_scripts/cache_embedded.py --out data/embedded [--height 64 --width 128 --seed 0]

The options are the run's data.source_size (W, H), data.embedded_seed, data.palette_shift,
data.light_shift and data.balance_shift.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segda.data import synthetic


def main(argv: list[str] | None = None) -> int:
    defaults = synthetic.SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/embedded")
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--palette-shift", type=float, default=defaults.palette_shift)
    parser.add_argument("--light-shift", type=float, default=defaults.light_shift)
    parser.add_argument("--balance-shift", type=float, default=defaults.balance_shift)
    args = parser.parse_args(argv)
    config = synthetic.SyntheticConfig(
        height=args.height, width=args.width, seed=args.seed,
        palette_shift=args.palette_shift, light_shift=args.light_shift,
        balance_shift=args.balance_shift,
    )
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
