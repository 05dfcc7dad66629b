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

Everything about Cityscapes lives here: the layout and the :class:`Cityscapes` dataset,
:func:`prepare` (run by ``data_scripts/prepare_cityscapes.py``, whose own options
:func:`add_prepare_arguments` declares), and :func:`check`, what
``python -m segda.doctor --dataset cityscapes`` reports.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from segda.data import checks
from segda.data.checks import Finding
from segda.data.real import (
    CountMismatchError,
    DatasetError,
    MissingFilesError,
    SegmentationFiles,
    check_list_splits,
    from_list,
    list_files,
    read_list,
    read_report,
    require_root,
    run_conversions,
    summarize,
    write_label_png,
    write_report,
)
from segda.data.stats import label_class_counts
from segda.labels import IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID

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


def prepare_hint(root: str | Path, lists: Mapping[str, str | Path] | None = None) -> str:
    extra = "".join(f" --list {split}={path}" for split, path in (lists or {}).items())
    return PREPARE_COMMAND.format(root=root) + extra


def stem(name: str) -> str:
    """``city/city_000000_000019_leftImg8bit.png`` -> ``city/city_000000_000019``."""
    return name[: -len(IMAGE_SUFFIX)] if name.endswith(IMAGE_SUFFIX) else name


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
    ours = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        ours[label_id] = train_id
    if not np.array_equal(lut, ours):
        diff = np.flatnonzero(lut != ours).tolist()
        raise DatasetError(
            f"cityscapesscripts' label table disagrees with the official mapping at ids {diff}; "
            "was cityscapesscripts/helpers/labels.py edited?"
        )


def _layout_hint(root: Path) -> str:
    if (root / "data" / "leftImg8bit").is_dir():
        return f" (found {root / 'data' / 'leftImg8bit'}: AdaptSegNet's layout; use root={root / 'data'})"
    return ""


class Cityscapes(SegmentationFiles):
    """Cityscapes ``train`` (target, usually without labels) or ``val`` (evaluation).

    ``names=None`` uses the full official list for the split and requires every image to be
    present; pass list lines (``city/..._leftImg8bit.png``), or ``list_file``, a file of such
    lines (as ``cityscapes_list/val.txt``), for a subset. ``with_labels`` defaults to ``split == "val"``.
    ``label_size="auto"`` keeps val labels at full resolution (``None``) and resizes train
    labels to the image size. Labels are the converted ``*_gtFine_labelTrainIds.png``.
    """

    dataset_name = NAME
    prepare_command = PREPARE_COMMAND

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: tuple[int, int] | None = (1024, 512),
        label_size: tuple[int, int] | str | None = "auto",
        with_labels: bool | None = None,
        normalization: str = "caffe",
        flip: bool = False,
        flip_seed: int = 0,
        names: Sequence[str] | None = None,
        check_labels: bool = True,
        list_file: str | Path | None = None,
    ) -> None:
        root = require_root(root, NAME, PREPARE_COMMAND)
        if list_file and names is not None:
            raise ValueError("pass names or list_file, not both")
        if list_file:
            names = read_list(list_file)
        full = names is None
        names = official_list(split) if full else [str(n) for n in names]
        with_labels = split == "val" if with_labels is None else with_labels
        if label_size == "auto":
            label_size = None if split == "val" else "image"
        image_dir = root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise MissingFilesError(
                f"no folder {image_dir}{_layout_hint(root)}. Download: "
                f"{DOWNLOAD_HELP.format(root=root)}"
            )
        present = present_names(image_dir, names)
        missing = [n for n in names if n not in present]
        if full and missing:
            raise CountMismatchError(
                f"{image_dir} holds {SPLIT_COUNTS[split] - len(missing)} of the "
                f"{SPLIT_COUNTS[split]} {split} images of the official list; missing: "
                f"{summarize(missing)}. Re-extract leftImg8bit_trainvaltest.zip."
            )
        if missing:
            raise MissingFilesError(f"Cityscapes images{from_list(list_file)} missing in "
                                    f"{image_dir}: {summarize(missing)}")
        labels = None
        if with_labels:
            label_dir = root / "gtFine" / split
            label_names = [stem(n) + TRAIN_IDS_SUFFIX for n in names]
            present_labels = present_names(label_dir, label_names)
            absent = [n for n in label_names if n not in present_labels]
            if absent:
                raise MissingFilesError(
                    f"{len(absent)} train-id labels{from_list(list_file)} missing in "
                    f"{label_dir} (e.g. {summarize(absent, 3)}). Run: "
                    f"{prepare_hint(root, {split: list_file} if list_file else None)}"
                )
            labels = [label_dir / n for n in label_names]
        self.split = split
        super().__init__(
            root,
            images=[image_dir / n for n in names],
            labels=labels,
            names=names,
            size=size,
            label_size=label_size,
            normalization=normalization,
            flip=flip,
            flip_seed=flip_seed,
            check_labels=check_labels,
        )


def present_names(folder: Path, names: Sequence[str]) -> set[str]:
    """The ``city/file`` names that exist under ``folder`` (one directory read per city)."""
    found: set[str] = set()
    for city in sorted({n.split("/", 1)[0] for n in names if "/" in n}):
        found |= {f"{city}/{f}" for f in list_files(folder / city)}
    return found


# ------------------------------------------------------------------------------- preparation


def prepare(
    root: str | Path,
    splits: Sequence[str] = ("train", "val"),
    from_polygons: bool = False,
    overwrite: bool = False,
    allow_partial: bool = False,
    workers: int = 1,
    lists: Mapping[str, str | Path] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Check images and gtFine against the official lists, write train-id labels, write the report.

    ``allow_partial`` converts the listed files that are present instead of requiring all.
    ``lists`` maps a split to a list file (one ``city/..._leftImg8bit.png`` per line) that
    replaces the official list; every file it names must be present.
    """
    root = require_root(root, NAME, PREPARE_COMMAND)
    lists = check_list_splits(lists, SPLITS)
    lut = label_id_to_train_id_lut()
    check_lut_agrees(lut)
    report = read_report(root) or {}
    report.update({"dataset": "cityscapes", "official_counts": dict(SPLIT_COUNTS)})
    report.setdefault("class_pixels", {})
    for split in splits:
        list_file = lists.get(split)
        names = read_list(list_file) if list_file else official_list(split)
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        images = present_names(image_dir, names) & set(names)
        want = [stem(n) + (POLYGONS_SUFFIX if from_polygons else LABEL_IDS_SUFFIX) for n in names]
        sources = present_names(label_dir, want) & set(want)  # the folders hold other files too
        miss_img = [n for n in names if n not in images]
        miss_src = [w for w in want if w not in sources]
        log(f"{split}: {len(images)}/{len(names)} images in {image_dir}, "
            f"{len(sources)}/{len(names)} gtFine files in {label_dir}")
        if (miss_img or miss_src) and list_file:
            raise MissingFilesError(
                f"Cityscapes {split}: {len(miss_img)} images and {len(miss_src)} gtFine files "
                f"named by list {list_file} are missing in {root} (e.g. "
                f"{summarize(miss_img + miss_src, 3)})"
            )
        if (miss_img or miss_src) and not allow_partial:
            hint = _layout_hint(root) or f"; download: {DOWNLOAD_HELP.format(root=root)}"
            raise CountMismatchError(
                f"Cityscapes {split}: {len(miss_img)} images and {len(miss_src)} gtFine files "
                f"of the official list are missing (e.g. {summarize(miss_img + miss_src, 3)})"
                f"{hint}"
            )
        jobs = []
        for n, src in zip(names, want, strict=True):
            if src not in sources:
                continue
            out = label_dir / (stem(n) + TRAIN_IDS_SUFFIX)
            if out.exists() and not overwrite and n in report["class_pixels"]:
                continue
            jobs.append((n, str(label_dir / src), str(out), from_polygons))
        for entry in run_conversions(_convert_one, jobs, workers):
            report["class_pixels"][entry["name"]] = entry["class_pixels"]
        log(f"{split}: wrote {len(jobs)} *{TRAIN_IDS_SUFFIX} files")
        report.setdefault("splits", {})[split] = {
            "images": len(images), "gtFine": len(sources),
            "missing_images": miss_img, "missing_gtFine": miss_src,
            **({"list": str(list_file)} if list_file else {}),
        }
    path = write_report(root, report)
    log(f"wrote {path}")
    return report


def _convert_one(job: tuple[str, str, str, bool]) -> dict:
    """Write one train-id label; returns its report entry (list name, class pixel counts)."""
    name, src, out, from_polygons = job
    train = _convert(Path(src), Path(out), label_id_to_train_id_lut(), from_polygons)
    return {"name": name, "class_pixels": label_class_counts(train).tolist()}


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
        raise DatasetError(f"cannot read {src}: {err}") from err
    if ids.ndim != 2:
        raise DatasetError(f"{src}: an image of {ids.shape[2]} channels where a single-channel "
                           f"labelIds PNG is expected (was it saved again in colour?); "
                           f"{LABEL_IDS_FIX}")
    train = lut[ids]
    write_label_png(out, train)
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
    lists = check_list_splits(lists, SPLITS)
    out = []
    if (root / "data" / "leftImg8bit").is_dir() and not (root / "leftImg8bit").is_dir():
        return [Finding("problem", f"{root} has AdaptSegNet's extra data/ level",
                        f"use --root {root / 'data'}")]
    download = DOWNLOAD_HELP.format(root=root)
    prep = prepare_hint(root, lists)
    try:
        import cityscapesscripts  # noqa: F401
    except ImportError:
        out.append(Finding("warn", "cityscapesscripts is not installed (needed to prepare labels)",
                           "pip install cityscapesscripts"))
    for split in ("train", "val"):
        try:
            names = read_list(lists[split]) if split in lists else official_list(split)
        except DatasetError as err:
            out.append(Finding("problem", str(err), "give an existing list file"))
            continue
        which = f"list {lists[split]}" if split in lists else "official list"
        images = present_names(root / "leftImg8bit" / split, names)
        miss = [n for n in names if n not in images]
        out.append(checks.count(len(names) - len(miss), len(names),
                                f"{split} images ({which})", download, miss))
        label_dir = root / "gtFine" / split
        ids = [stem(n) + LABEL_IDS_SUFFIX for n in names]
        train_ids = [stem(n) + TRAIN_IDS_SUFFIX for n in names]
        present = present_names(label_dir, ids + train_ids)
        miss_ids = [i for i in ids if i not in present]
        out.append(checks.count(len(ids) - len(miss_ids), len(ids), f"{split} gtFine labelIds",
                                download, miss_ids))
        miss_t = [t for t in train_ids if t not in present]
        # The quick check reads the first labelIds file's header: colour labelIds would make
        # the prepare command below fail again.
        first_ids = next((label_dir / i for i in ids if i in present), None)
        bad_ids = None if full or first_ids is None else \
            checks.inspect_png(first_ids, "label8", f"{LABEL_IDS_FIX} ({prep} --from-polygons)")
        if bad_ids is not None:
            bad_ids.message += " (the first labelIds file; doctor --full lists every one)"
            if not miss_t:  # training reads the train-id labels, which are all there
                bad_ids.level = "warn"
            out.append(bad_ids)
        make_train_ids = prep if bad_ids is None else \
            f"make the labelIds single-channel first (above), then run: {prep}"
        if not miss_t:
            out.append(Finding("ok", f"{split} train-id labels: {len(train_ids)}"))
        else:
            # val labels are needed for evaluation; train labels only for an oracle run
            level = "problem" if split == "val" else "warn"
            why = "" if split == "val" else " (only needed to train an oracle)"
            out.append(Finding(level, f"{split} train-id labels: {len(train_ids) - len(miss_t)}/"
                               f"{len(train_ids)}{why}", make_train_ids))
        remake = f"{prep} --overwrite (prepare writes these files; without --overwrite it keeps them)"
        if full:
            out += checks.decode_all([root / "leftImg8bit" / split / n for n in names
                                      if n in images], "image8", f"{split} images")
            out += checks.decode_all([label_dir / f for f in ids if f in present], "label8",
                                     f"{split} gtFine labelIds", f"{LABEL_IDS_FIX} ({prep} "
                                     "--from-polygons)")
            out += checks.decode_all([label_dir / f for f in train_ids if f in present], "label8",
                                     f"{split} train-id labels", remake)
        else:
            first_train = next((label_dir / t for t in train_ids if t in present), None)
            bad_train = None if first_train is None else \
                checks.inspect_png(first_train, "label8", remake)
            if bad_train is not None:
                out.append(bad_train)
            if len(miss) < len(names):
                first = next(n for n in names if n in images)
                out.append(checks.decodes(root / "leftImg8bit" / split / first))
    return out
