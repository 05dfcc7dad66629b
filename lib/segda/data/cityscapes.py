"""Cityscapes (Cordts et al., CVPR 2016): the target domain and the evaluation set.

Download (an account at https://www.cityscapes-dataset.com is required; the tool asks for it
and checks each package's MD5 itself)::

    csDownload -d <root> leftImg8bit_trainvaltest.zip gtFine_trainvaltest.zip
    cd <root> && unzip -q leftImg8bit_trainvaltest.zip && unzip -q gtFine_trainvaltest.zip

Layout: ``<root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
``<root>/gtFine/{train,val}/<city>/..._gtFine_labelIds.png``. (AdaptSegNet's default root has one
more level, ``./data/Cityscapes/data``; give the folder that holds ``leftImg8bit``.)

:func:`prepare` writes ``..._gtFine_labelTrainIds.png`` beside each ``labelIds`` file, mapping label
ids to train ids with cityscapesscripts' own table (``cityscapesscripts.helpers.labels``;
train id 255 or -1 -> 255). This is what cityscapesscripts' ``createTrainIdLabelImgs`` writes
from the polygon JSON files (``from_polygons=True`` calls that code instead).

Splits: the official lists of AdaptSegNet/ADVENT (``cityscapes_list/train.txt``, 2975 lines;
``val.txt``, 500 lines: frankfurt 267, lindau 59, munster 174), shipped in ``segda/splits``.
Evaluation uses val at full resolution (2048x1024 labels, ``label_size=None``) with the image
resized to 1024x512, as both papers do.

Here: the :data:`LAYOUT` (:mod:`segda.data.layout` opens, prepares and checks it), the dataset,
:func:`prepare` (``data_scripts/prepare_cityscapes.py``) and :func:`check` (the doctor).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np

from segda.data import checks, layout, real
from segda.data.checks import Finding
from segda.data.stats import label_class_counts
from segda.labels import IGNORE_INDEX, label_id_lut

NAME = "cityscapes"
SPLIT_COUNTS = {"train": 2975, "val": 500}
SPLITS = tuple(SPLIT_COUNTS)
PREPARE_COMMAND = "python data_scripts/prepare_cityscapes.py --root {root}"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
POLYGONS_SUFFIX = "_gtFine_polygons.json"
# What makes single-channel labelIds again, when those on disk are colour images.
LABEL_IDS_FIX = ("extract the *_gtFine_labelIds.png files again from gtFine_trainvaltest.zip, "
                 "or render the train ids from the *_gtFine_polygons.json files with "
                 "--from-polygons")
DOWNLOAD_HELP = (
    "csDownload -d {root} leftImg8bit_trainvaltest.zip gtFine_trainvaltest.zip "
    "(pip install cityscapesscripts; needs a cityscapes-dataset.com account), then unzip both "
    "in {root}"
)


def official_list(split: str) -> list[str]:
    """Lines of the official AdaptSegNet/ADVENT list for ``split`` (``city/..._leftImg8bit.png``)."""
    if split not in SPLIT_COUNTS:
        raise ValueError(f"split must be one of {sorted(SPLIT_COUNTS)}, got {split!r}")
    text = resources.files("segda").joinpath(f"splits/cityscapes_{split}.txt").read_text()
    return text.split()


def _adaptsegnet_root(root: Path) -> str | None:
    """The fix when ``root`` is the folder above the dataset, as AdaptSegNet's default."""
    data = root / "data"
    if (data / "leftImg8bit").is_dir():
        return f"use root={data} (found {data / 'leftImg8bit'}: AdaptSegNet's layout)"
    return None


LAYOUT = layout.Layout(
    name=NAME, title="Cityscapes", prepare_command=PREPARE_COMMAND, splits=SPLITS,
    images="leftImg8bit/{split}", labels="gtFine/{split}", image_suffix=IMAGE_SUFFIX,
    source_suffix=LABEL_IDS_SUFFIX, train_id_suffix=TRAIN_IDS_SUFFIX, nested=True,
    official=lambda split: official_list(split), count=lambda split: SPLIT_COUNTS[split],
    download=DOWNLOAD_HELP,
    misplaced=_adaptsegnet_root,
)


stem = LAYOUT.stem  # ``city/city_000000_000019_leftImg8bit.png`` -> ``city/city_000000_000019``


def label_id_to_train_id_lut() -> np.ndarray:
    """256-entry uint8 LUT built from cityscapesscripts' label table (-1/255 -> 255)."""
    from cityscapesscripts.helpers.labels import labels as cs_labels

    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lab in cs_labels:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < IGNORE_INDEX:
            lut[lab.id] = lab.trainId
    return lut


def check_lut_agrees(lut: np.ndarray) -> None:
    """cityscapesscripts' table must give the official mapping (segda.labels); stop if not."""
    ours = label_id_lut()
    if not np.array_equal(lut, ours):
        diff = np.flatnonzero(lut != ours).tolist()
        raise real.DatasetError(
            f"cityscapesscripts' label table disagrees with the official mapping at ids {diff}; "
            "was cityscapesscripts/helpers/labels.py edited?"
        )


class Cityscapes(layout.LayoutDataset):
    """Cityscapes ``train`` (target, usually without labels) or ``val`` (evaluation).

    ``names=None`` uses the full official list for the split and requires every image to be
    present; pass list lines (``city/..._leftImg8bit.png``), or ``list_file``, a file of such
    lines (as ``cityscapes_list/val.txt``), for a subset. ``with_labels`` defaults to ``split == "val"``.
    ``label_size="auto"`` keeps val labels at full resolution (``None``) and resizes train
    labels to the image size. Labels are the converted ``*_gtFine_labelTrainIds.png``.
    """

    layout = LAYOUT

    def __init__(self, root: str | Path, split: str = "train", size: tuple[int, int] | None = (1024, 512),
                 label_size: tuple[int, int] | str | None = "auto", with_labels: bool | None = None,
                 normalization: str = "caffe", flip: bool = False, flip_seed: int = 0,
                 names: Sequence[str] | None = None, check_labels: bool = True,
                 list_file: str | Path | None = None) -> None:
        with_labels = split == "val" if with_labels is None else with_labels
        if label_size == "auto":
            label_size = None if split == "val" else "image"
        self.split = split
        super().__init__(root, split, names, list_file, "names", with_labels, size=size,
                         label_size=label_size, normalization=normalization, flip=flip,
                         flip_seed=flip_seed, check_labels=check_labels)


# ------------------------------------------------------------------------------- preparation


def prepare(root: str | Path, splits: Sequence[str] = ("train", "val"), from_polygons: bool = False,
            overwrite: bool = False, allow_partial: bool = False, workers: int = 1,
            lists: Mapping[str, str | Path] | None = None, log: Callable[[str], None] = print) -> dict:
    """Check images and gtFine against the official lists, write train-id labels, write the report.

    ``allow_partial`` converts the listed files that are present instead of requiring all.
    ``lists`` maps a split to a list file (one ``city/..._leftImg8bit.png`` per line) that
    replaces the official list; every file it names must be present.
    """
    root = real.require_root(root, NAME, PREPARE_COMMAND)
    lists = real.check_list_splits(lists, SPLITS)
    check_lut_agrees(label_id_to_train_id_lut())
    sources = dataclasses.replace(LAYOUT, source_suffix=POLYGONS_SUFFIX) if from_polygons \
        else LAYOUT
    report = real.read_report(root) or {}
    report.update({"dataset": "cityscapes", "official_counts": dict(SPLIT_COUNTS)})
    report.setdefault("class_pixels", {})
    for split in splits:
        list_file = lists.get(split)
        found = layout.survey_download(sources, root, split, list_file, allow_partial, log)
        entries = layout.convert_labels(sources, root, split,
                                        [n for n in found.names if n in found.sources],
                                        layout.earlier_entries(report),
                                        partial(_convert_one, from_polygons=from_polygons),
                                        overwrite, workers, log)
        report["class_pixels"] = {n: e["class_pixels"] for n, e in entries.items()}
        report.setdefault("splits", {})[split] = {
            "images": len(found.images), "gtFine": len(found.sources),
            "missing_images": found.missing_images,
            "missing_gtFine": [sources.source_name(n) for n in found.missing_sources],
            **({"list": str(list_file)} if list_file else {}),
        }
    layout.finish_report(root, report, None, log)
    return report


def _convert_one(job: layout.Conversion, from_polygons: bool) -> dict:
    """Write one train-id label; returns its report entry (list name, class pixel counts)."""
    train = _convert(job.source, job.out, label_id_to_train_id_lut(), from_polygons)
    return {"name": job.name, "class_pixels": label_class_counts(train).tolist()}


def _convert(src: Path, out: Path, lut: np.ndarray, from_polygons: bool) -> np.ndarray:
    from PIL import Image

    if from_polygons:
        from cityscapesscripts.preparation.json2labelImg import json2labelImg

        json2labelImg(str(src), str(out), "trainIds")  # cityscapesscripts' own rendering
        with Image.open(out) as im:
            return np.asarray(im)
    try:
        with Image.open(src) as im:
            ids = np.asarray(im)
    except OSError as err:
        raise real.DatasetError(f"cannot read {src}: {err}") from err
    if ids.ndim != 2:
        raise real.DatasetError(f"{src}: an image of {ids.shape[2]} channels where a single-channel "
                           f"labelIds PNG is expected (was it saved again in colour?); "
                           f"{LABEL_IDS_FIX}")
    train = lut[ids]
    real.write_label_png(out, train)
    return train


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``data_scripts/prepare_cityscapes.py`` beyond the shared ones."""
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    parser.add_argument("--from-polygons", action="store_true",
                        help="render from *_gtFine_polygons.json instead of mapping labelIds")


# ------------------------------------------------------------------------------------ checks


def check(root: Path, lists: Mapping[str, str | Path] | None = None,
          full: bool = False) -> list[Finding]:
    """What the doctor reports about a Cityscapes folder: images, gtFine and train-id labels
    of the official lists (or of the list files ``lists[split]``), decoding (of one image per
    split, or with ``full`` of every file, each bad one named)."""
    lists = real.check_list_splits(lists, SPLITS)
    out = []
    if (root / "data" / "leftImg8bit").is_dir() and not (root / "leftImg8bit").is_dir():
        return [Finding("problem", f"{root} has AdaptSegNet's extra data/ level",
                        f"use --root {root / 'data'}")]
    prep = LAYOUT.hint(root, lists)
    try:
        import cityscapesscripts  # noqa: F401
    except ImportError:
        out.append(Finding("warn", "cityscapesscripts is not installed (needed to prepare labels)",
                           "pip install cityscapesscripts"))
    for split in ("train", "val"):
        listed, unreadable = layout.read_check_list(lists, split, "give an existing list file")
        if unreadable:
            out.append(unreadable)
            continue
        which = f"list {lists[split]}" if split in lists else "official list"
        found = layout.survey(LAYOUT, root, split, listed or official_list(split))
        what = {"images": f"{split} images ({which})", "labels": f"{split} gtFine labelIds",
                "decode images": f"{split} images", "decode labels": f"{split} gtFine labelIds",
                "decode train ids": f"{split} train-id labels"}.__getitem__
        out += layout.count_findings(LAYOUT, root, split, found, True, what)
        label_dir = LAYOUT.folder(root, "labels", split)
        n_train_ids = len(found.converted)
        # The quick check reads the first labelIds file's header: colour labelIds would make
        # the prepare command below fail again.
        first_ids = next((label_dir / LAYOUT.source_name(n) for n in found.names
                          if n in found.sources), None)
        bad_ids = None if full or first_ids is None else \
            checks.inspect_png(first_ids, "label8", f"{LABEL_IDS_FIX} ({prep} --from-polygons)")
        complete = n_train_ids == len(found.names)
        if bad_ids is not None:
            bad_ids.message += " (the first labelIds file; doctor --full lists every one)"
            if complete:  # training reads the train-id labels, which are all there
                bad_ids.level = "warn"
            out.append(bad_ids)
        make_train_ids = prep if bad_ids is None else \
            f"make the labelIds single-channel first (above), then run: {prep}"
        # val labels are needed for evaluation; train labels only for an oracle run
        out += layout.conversion_findings(
            f"{split} train-id labels", n_train_ids,
            [n for n in found.names if n not in found.converted], make_train_ids,
            *(("problem", "") if split == "val" else ("warn", " (only needed to train an oracle)")))
        remake = f"{prep} --overwrite (prepare writes these files; without --overwrite it keeps them)"
        if full:
            out += layout.decode_findings(LAYOUT, root, split, found, what,
                                          f"{LABEL_IDS_FIX} ({prep} --from-polygons)", remake)
        else:
            first_train = next((label_dir / LAYOUT.train_id_name(n) for n in found.names
                                if n in found.converted), None)
            bad_train = None if first_train is None else \
                checks.inspect_png(first_train, "label8", remake)
            if bad_train is not None:
                out.append(bad_train)
            out += layout.first_decodes(LAYOUT, root, split, found, train_id=False)
    return out
