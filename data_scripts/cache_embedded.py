"""Render the embedded benchmark once and keep it as .npz files, which training then reads.

The embedded benchmark needs no files: every sample is rendered on the fly from (seed, domain,
split, index). This script renders every split into <out>/<domain>_<split>.npz. When <out> is
<data.root>/embedded (the default, data/embedded, is where the default data.root looks),
segda.data.registry reads the files instead of rendering, after checking that they hold
exactly what the run's generator config renders (segda.data.embedded_cache); a file written
for another config (size, seed, shifts) or by another version of the generator is ignored with
a warning. Results are the same with or without the cache.

    python data_scripts/cache_embedded.py --out data/embedded --preset embedded/source_only
    python data_scripts/cache_embedded.py --out data/embedded [--height 64 --width 128 --seed 0 ...]

--preset takes the generator config of a preset's data section (every embedded/* preset of the
walk renders the same benchmark; `make demo` and `make test` write this cache first). Without
it the generator's own defaults are used. The other options override either; they are the
run's data.source_size (W, H), data.embedded_seed, data.palette_shift, data.light_shift,
data.balance_shift, data.condition_shift and data.class_confusion.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from segda.data import synthetic
from segda.errors import UserError

# option -> SyntheticConfig field
OPTIONS = {"height": "height", "width": "width", "seed": "seed",
           "palette_shift": "palette_shift", "light_shift": "light_shift",
           "balance_shift": "balance_shift", "condition_shift": "condition_shift",
           "class_confusion": "class_confusion"}


def generator_config(preset: str | None, **options) -> synthetic.SyntheticConfig:
    """The preset's generator config (or the generator's defaults), with the options given."""
    if preset is None:
        base = synthetic.SyntheticConfig()
    else:
        from segda import config
        from segda.data import registry

        cfg = config.load(preset)
        if cfg.data.dataset != "embedded":
            raise ValueError(f"--preset {preset} trains on {cfg.data.dataset!r}, not the "
                             "embedded benchmark; give an embedded/* preset")
        base = registry.embedded_config(cfg.data)
    given = {OPTIONS[k]: v for k, v in options.items() if v is not None}
    from segda.config import RANGES

    for name, value in given.items():
        low, high = RANGES.get(f"data.{name}", (None, None))
        if low is not None and not low <= value <= high:
            raise ValueError(f"--{name.replace('_', '-')} must lie in [{low}, {high}] (as "
                             f"data.{name}), got {value}")
        if name in ("height", "width") and value < 16:
            raise ValueError(f"--{name} must be at least 16 pixels, got {value}")
    return dataclasses.replace(base, **given)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/embedded")
    parser.add_argument("--preset", default=None,
                        help="take the generator config of this embedded/* preset")
    for option in ("height", "width", "seed"):
        parser.add_argument(f"--{option}", type=int, default=None)
    for option in ("palette_shift", "light_shift", "balance_shift", "condition_shift",
                   "class_confusion"):
        parser.add_argument(f"--{option.replace('_', '-')}", type=float, default=None)
    args = parser.parse_args(argv)
    options = {k: getattr(args, k) for k in OPTIONS}
    try:
        config = generator_config(args.preset, **options)
    except (ValueError, UserError) as err:  # an unknown or non-embedded preset, a bad value
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for domain in synthetic.DOMAINS:
        for split in synthetic.SPLITS:
            final = out / f"{domain}_{split}.npz"
            # Written beside and renamed into place, so that a run that starts meanwhile (or an
            # interrupted script) never reads a half-written file.
            partial = synthetic.SyntheticStreetScenes(domain, split, config).save_cache(
                out / f".{domain}_{split}.partial.npz")
            partial.replace(final)
            print(f"wrote {final}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
