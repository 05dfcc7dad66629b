"""Pre-rendered splits of the embedded benchmark, read when they match the requested generator.

``python data_scripts/cache_embedded.py --out data/embedded`` renders every split once into
``<folder>/<domain>_<split>.npz`` (:meth:`SyntheticStreetScenes.save_cache`); the registry then
reads ``<data.root>/embedded/`` instead of rendering, which saves the rendering time of each new
run (a few seconds per 1,000 samples at 64x128).

A cache is used only if it is what rendering would produce: the generator config stored in the
file must equal the requested one (a run of another config renders its own samples, silently:
the file is another config's cache), and two samples rendered afresh must equal the stored ones
(this catches a file written by an older version of the generator). A file that fails that
check, or cannot be read, is ignored with a warning that says why and how to rebuild it, and
the split is rendered as usual; the samples are the same either way, so a cache never changes a
result.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from segda.data.synthetic import SyntheticConfig, SyntheticStreetScenes, render_sample

FOLDER = "embedded"  # under DataConfig.root
SCRIPT = "python data_scripts/cache_embedded.py"


def cache_path(folder: str | Path, domain: str, split: str) -> Path:
    return Path(folder) / f"{domain}_{split}.npz"


def rebuild_command(folder: str | Path, config: SyntheticConfig) -> str:
    return (f"{SCRIPT} --out {folder} --height {config.height} --width {config.width} "
            f"--seed {config.seed} --palette-shift {config.palette_shift} "
            f"--light-shift {config.light_shift} --balance-shift {config.balance_shift} "
            f"--condition-shift {config.condition_shift} "
            f"--class-confusion {config.class_confusion}")


def _matches_generator(dataset: SyntheticStreetScenes) -> bool:
    for i in sorted({0, len(dataset) - 1}):
        image, label = render_sample(dataset.config, dataset.domain, dataset.split, i)
        if not (np.array_equal(dataset.label_array(i), label)
                and np.array_equal(dataset.raw_image(i), image.astype(np.float32) / 255.0)):
            return False
    return True


def load_verified(
    folder: str | Path, domain: str, split: str, config: SyntheticConfig, flip: bool = False,
) -> SyntheticStreetScenes | None:
    """The cached split in ``folder`` if it holds exactly what ``config`` renders, else None.

    None without a word when there is no file or the file holds another config's samples; with
    a :class:`UserWarning` naming the file, the reason and the command that rebuilds it when the
    file is unreadable, holds another split, or no longer matches the generator.
    """
    path = cache_path(folder, domain, split)
    if not path.is_file():
        return None

    def ignored(why: str) -> None:
        warnings.warn(f"ignoring the embedded-benchmark cache {path}: {why}. Rendering instead; "
                      f"to rebuild the cache run: {rebuild_command(folder, config)} (or delete "
                      "the file)", UserWarning, stacklevel=3)

    unreadable = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile)  # truncated, or
    # not the arrays save_cache writes
    try:
        with np.load(path) as stored:  # the small entries only: the images are read below
            stored_config = SyntheticConfig.from_json(str(stored["config"]))
            held = (str(stored["domain"]), str(stored["split"]))
    except unreadable as err:
        ignored(f"cannot read it ({err})")
        return None
    if held != (domain, split):
        ignored(f"it holds {held[0]}/{held[1]}, not {domain}/{split}")
        return None
    if stored_config != config:
        # Another config's cache (make demo / make test write the walk's): a run of another
        # size or shift renders its own samples, without a word.
        return None
    try:
        dataset = SyntheticStreetScenes.load(path, flip=flip)
    except unreadable as err:
        ignored(f"cannot read it ({err})")
        return None
    if not _matches_generator(dataset):
        ignored("its samples differ from what the generator renders now (written by another "
                "version of segda?)")
        return None
    return dataset
