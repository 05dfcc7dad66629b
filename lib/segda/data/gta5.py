"""GTA5 ("Playing for Data", Richter et al., ECCV 2016): the source domain.

Layout (as downloaded from https://download.visinf.tu-darmstadt.de/data/from_games/ and
extracted): ``<root>/images/NNNNN.png`` and ``<root>/labels/NNNNN.png``, 24,966 pairs numbered
00001..24966. The label PNGs are palette images whose *indices* are Cityscapes label ids
(0..33); the colours are only for display.

:func:`prepare` converts every label once, offline, to a grey train-id PNG beside the original
(``labels/NNNNN_labelTrainIds.png``; ids 7, 8, 11, ... 33 -> 0..18, everything else -> 255, the
official mapping), so training reads ready labels and does no per-sample remapping. A few GTA5
labels are a few pixels off their image's size; the documented rule here is to resize such a
label with nearest neighbour to its image's size (or, with ``exclude_mismatched=True``, to drop
the pair). A label further off (:func:`label_size_fits`: another aspect ratio, another scale)
is not its image's label, and is an error naming both files. Either way the files are listed
in the JSON report ``<root>/segda_prepare_report.json``, which the :class:`GTA5` dataset reads
to skip excluded pairs and to refuse labels of the wrong size.

No checksums are published for the GTA5 archives; :func:`hash_archives` records SHA-256 sums of
the zips you downloaded, so a later copy can be compared with yours.

Here: the :data:`LAYOUT` (:mod:`segda.data.layout` opens, prepares and checks it), the dataset,
:func:`prepare` (``data_scripts/prepare_gta5.py``) and :func:`check` (the doctor).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from segda.data import layout, real
from segda.data.checks import Finding
from segda.labels import label_id_lut

NAME = "gta5"
SPLITS = ("train",)  # one list: AdaptSegNet's gta5_list/train.txt (ADVENT's all.txt)
GTA5_COUNT = 24966
PREPARE_COMMAND = "python data_scripts/prepare_gta5.py --root {root}"
DOWNLOAD_PAGE = "https://download.visinf.tu-darmstadt.de/data/from_games/"
# SHA-256 of the distributed archives: none are published by the authors, so none are known.
ARCHIVE_SHA256: dict[str, str] = {}
LABEL_SUFFIX = "_labelTrainIds.png"
MAX_LABEL_ID = 33  # Cityscapes label ids run 0..33 (license plate, -1, never appears in a PNG)
# How far a label may be off its image's size and still be its label, resized: the real
# mismatches are a few pixels. Per side, the larger of the two.
SIZE_TOLERANCE = 0.02  # of the image's side
SIZE_TOLERANCE_PX = 4  # pixels (the miniature's 64x35 images)


def official_ids() -> list[str]:
    """``00001.png`` ... ``24966.png``: the official list (AdaptSegNet ``gta5_list/train.txt``,
    ADVENT ``gta5_list/all.txt``), shipped as ``segda/splits/gta5_all.txt``."""
    text = resources.files("segda").joinpath("splits/gta5_all.txt").read_text()
    return text.split()


LAYOUT = layout.Layout(
    name=NAME, title="GTA5", prepare_command=PREPARE_COMMAND, splits=SPLITS,
    images="images", labels="labels", image_suffix=".png", source_suffix=".png",
    train_id_suffix=LABEL_SUFFIX, pattern=re.compile(r"^\d{5}\.png$"),
    official=lambda split: official_ids(), count=lambda split: GTA5_COUNT,
    download=(f"download the 10 image and 10 label zips from {DOWNLOAD_PAGE} and extract them "
              "into {root}"),
)

train_id_name = LAYOUT.train_id_name


def label_size_fits(image_wh: Sequence[int], label_wh: Sequence[int]) -> bool:
    """Whether a label of ``label_wh`` (W, H) can be its image's, resized: each side within
    :data:`SIZE_TOLERANCE` (or :data:`SIZE_TOLERANCE_PX`) of the image's. A label a third of the
    size, or of another aspect ratio, is another file."""
    return all(abs(int(i) - int(lab)) <= max(SIZE_TOLERANCE_PX, SIZE_TOLERANCE * int(i))
               for i, lab in zip(image_wh, label_wh, strict=True))


def wrong_size_message(root: Path, mismatches: Sequence[dict], list_file=None) -> str:
    """The error about labels too far off their image's size (report entries ``{"name",
    "image", "label"}``), naming both files and sizes of the first few, and the fix."""
    return (f"{_describe_wrong_sizes(root, mismatches)}. They are other files than the images' "
            f"labels: {_wrong_size_fix(root, list_file)}")


def _describe_wrong_sizes(root: Path, mismatches: Sequence[dict]) -> str:
    shown = "; ".join(f"{root / 'labels' / m['name']} is {m['label'][0]}x{m['label'][1]} but its "
                      f"image {root / 'images' / m['name']} is {m['image'][0]}x{m['image'][1]}"
                      for m in mismatches[:3])
    more = f" (and {len(mismatches) - 3} more)" if len(mismatches) > 3 else ""
    return (f"{len(mismatches)} GTA5 label(s) are not the size of their image, beyond the few "
            f"pixels that are resized: {shown}{more}")


def _wrong_size_fix(root: Path, list_file) -> str:
    return (f"extract these labels again from the label archives, or drop the pairs: "
            f"{LAYOUT.hint(root, list_file)} --exclude-mismatched")


def wrong_size_entries(report: dict, names: Sequence[str] | None = None) -> list[dict]:
    """The report's size mismatches (of ``names``, default all) too far off to be resized and
    not excluded."""
    wanted = None if names is None else set(names)
    return [m for m in report.get("size_mismatches", [])
            if (wanted is None or m["name"] in wanted) and not m.get("excluded")
            and not label_size_fits(m["image"], m["label"])]


class GTA5(layout.LayoutDataset):
    """GTA5 images with converted train-id labels.

    ``ids=None`` uses the full official list and then insists on all 24,966 images being
    present (:class:`~segda.data.real.CountMismatchError` otherwise); pass a list of names
    (``"00001.png"``), or ``list_file``, a file with one name per line (as
    ``gta5_list/train.txt``), for a subset.
    Pairs excluded by the prepare step (report) are skipped unless ``exclude`` is given
    explicitly. Defaults are the official ones: 1280x720, caffe normalisation, no flip.
    """

    layout = LAYOUT

    def __init__(self, root: str | Path, size: tuple[int, int] | None = (1280, 720),
                 label_size: tuple[int, int] | str | None = "image", normalization: str = "caffe",
                 flip: bool = False, flip_seed: int = 0, ids: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None, check_labels: bool = True,
                 list_file: str | Path | None = None) -> None:
        self._exclude = exclude
        super().__init__(root, "train", ids, list_file, "ids", size=size, label_size=label_size,
                         normalization=normalization, flip=flip, flip_seed=flip_seed,
                         check_labels=check_labels)

    def usable(self, root: Path, names: list[str], list_file: str | Path | None) -> list[str]:
        """Without the pairs the prepare step excluded; refuses labels too far off their size."""
        report = real.read_report(root) or {}
        skip = set(report.get("excluded", []) if self._exclude is None else self._exclude)
        names = [i for i in names if i not in skip]
        wrong = wrong_size_entries(report, names)
        if wrong:
            raise real.SizeMismatchError(wrong_size_message(root, wrong, list_file))
        return names


# ------------------------------------------------------------------------------- preparation


def _convert_one(job: layout.Conversion, exclude_mismatched: bool, strict: bool) -> dict:
    """Convert one palette label to train ids; returns what the report records about it."""
    label_path = job.source
    try:
        with Image.open(label_path) as pil:
            if pil.mode not in ("P", "L"):
                raise real.LabelValueError(
                    f"{label_path}: mode {pil.mode}, expected a palette PNG whose indices are "
                    "Cityscapes label ids (was a colour-converted copy extracted?)"
                )
            ids = np.asarray(pil)
    except OSError as err:  # PIL's error for a truncated or unreadable file
        raise real.DatasetError(f"cannot read {label_path}: {err}") from err
    entry = layout.new_entry(job, ids, MAX_LABEL_ID, strict, "Cityscapes label")
    image_wh = real.png_size(job.image)
    label_wh = (ids.shape[1], ids.shape[0])
    if label_wh != image_wh:
        entry["size_mismatch"] = {"image": list(image_wh), "label": list(label_wh)}
        if exclude_mismatched:
            entry["excluded"] = True
            return entry
        if not label_size_fits(image_wh, label_wh):
            return entry  # not converted: prepare names it once every label is done
        ids = np.asarray(Image.fromarray(ids).resize(image_wh, Image.NEAREST))
    return layout.write_train_ids(entry, job.out, label_id_lut()[ids])


def _earlier_entries(report: dict) -> dict[str, dict]:
    """The shared entries of an earlier report, with its size mismatches."""
    entries = layout.earlier_entries(report)
    for m in report.get("size_mismatches", []):
        e = entries.setdefault(m["name"], {"name": m["name"]})
        e["size_mismatch"] = {"image": m["image"], "label": m["label"]}
        if m.get("excluded"):
            e["excluded"] = True
    return entries


def _reusable(prev: dict, out: Path, exclude_mismatched: bool) -> bool:
    if "size_mismatch" in prev:  # reuse only if the same rule was applied to it
        return exclude_mismatched == bool(prev.get("excluded")) and (exclude_mismatched or out.exists())
    return layout.still_converted(prev, out)


def prepare(root: str | Path, exclude_mismatched: bool = False, overwrite: bool = False,
            strict_ids: bool = False, allow_partial: bool = False, workers: int = 1,
            archives: str | Path | None = None, lists: Mapping[str, str | Path] | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Verify counts, convert labels to train ids, write the JSON report; returns the report.

    ``allow_partial`` converts whatever pairs are present instead of requiring all 24,966.
    ``lists={"train": FILE}`` converts the pairs a list file names (one name per line, as
    ``gta5_list/train.txt``), each of which must be present; report entries of other pairs are
    kept. Already converted labels are kept (and their entries reused) unless ``overwrite``.
    """
    root, list_file, found, old, by_name = layout.prepare_list(
        LAYOUT, root, lists, partial(_convert_one, exclude_mismatched=exclude_mismatched,
                                     strict=strict_ids), allow_partial, overwrite, workers, log,
        _earlier_entries, partial(_reusable, exclude_mismatched=exclude_mismatched))
    # a subset keeps what earlier runs recorded about the other pairs
    entries = sorted(by_name.values() if list_file else [by_name[n] for n in found.pairs],
                     key=lambda e: e["name"])
    mismatched = [e for e in entries if "size_mismatch" in e]
    for e in mismatched:
        action = "excluded" if e.get("excluded") else "label resized (nearest) to image size" \
            if "class_pixels" in e else "NOT converted: too far off to be this image's label"
        log(f"  size mismatch {e['name']}: image {e['size_mismatch']['image']}, "
            f"label {e['size_mismatch']['label']} -> {action}")
    unknown = {e["name"]: e["unknown_ids"] for e in entries if "unknown_ids" in e}
    if unknown:
        log(f"  {len(unknown)} labels hold ids > {MAX_LABEL_ID} (mapped to ignore), "
            f"e.g. {real.summarize(list(unknown), 3)}")
    report = {
        "dataset": "gta5",
        "official_count": GTA5_COUNT,
        "counts": {"images": len(found.image_files),
                   "labels": sum(bool(LAYOUT.pattern.match(n)) for n in found.label_files)},
        "missing_pairs": sorted(set(found.missing_images) | set(found.missing_sources)),
        "size_mismatch_rule": "excluded" if exclude_mismatched else "label resized to image size "
        "with nearest neighbour",
        "size_mismatches": [{"name": e["name"], **e["size_mismatch"],
                             "excluded": bool(e.get("excluded"))} for e in mismatched],
        "excluded": [e["name"] for e in entries if e.get("excluded")],
        "unknown_label_ids": unknown,
        "class_pixels": {e["name"]: e["class_pixels"] for e in entries if "class_pixels" in e},
        "archive_sha256": old.get("archive_sha256", {}),
        "archive_sha256_note": "no SHA-256 is published for the GTA5 archives; these are the "
        "sums of the files this copy was extracted from, for later comparison",
    }
    if archives is not None:
        report["archive_sha256"] = layout.hash_archives(archives, ARCHIVE_SHA256)
    layout.finish_report(root, report, list_file, log, f": {len(report['class_pixels'])} labels "
                         f"converted, {len(mismatched)} size mismatches, "
                         f"{len(report['excluded'])} excluded")
    wrong = wrong_size_entries(report, found.pairs)
    if wrong:
        raise real.SizeMismatchError(wrong_size_message(root, wrong, list_file))
    return report


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``data_scripts/prepare_gta5.py`` beyond the shared ones."""
    parser.add_argument("--exclude-mismatched", action="store_true",
                        help="drop pairs whose label size differs from the image (default: "
                        "resize the label with nearest neighbour to the image size)")
    parser.add_argument("--strict-ids", action="store_true",
                        help="fail on label ids > 33 instead of mapping them to ignore")
    parser.add_argument("--archives", default=None, help="folder with the downloaded zips to hash")


# ------------------------------------------------------------------------------------ checks


def check(root: Path, lists: Mapping[str, str | Path] | None = None,
          full: bool = False) -> list[Finding]:
    """What the doctor reports about a GTA5 folder: counts (of the official list, or of the
    list file ``lists["train"]``), conversion, report, decoding (of the first pair, or with
    ``full`` of every file, each bad one named)."""
    found, list_file, what, out = layout.check_counts(LAYOUT, root, lists)
    if found is None:
        return out
    ids = found.names
    unexpected = sorted(found.image_files - set(ids))
    if unexpected and list_file is None:
        out.append(Finding("warn", f"{len(unexpected)} image names outside the official list "
                           f"(e.g. {real.summarize(unexpected, 3)}); ignored"))
    prep = LAYOUT.hint(root, list_file)
    report = real.read_report(root)
    excluded = set((report or {}).get("excluded", []))
    wrong_size = {m["name"] for m in wrong_size_entries(report or {}, ids)}  # named below
    todo = sorted(found.sources - found.converted - excluded - wrong_size)
    out += layout.conversion_findings("train-id labels", len(found.converted), todo, prep)
    converted = sum(n.endswith(LABEL_SUFFIX) for n in found.label_files)
    if report is None:
        out.append(Finding("problem" if converted else "warn",
                           "no prepare report (segda_prepare_report.json)", prep))
    else:
        mism = [m for m in report.get("size_mismatches", []) if m["name"] not in wrong_size]
        rule = report.get("size_mismatch_rule", "?")
        names = [m["name"] for m in mism]
        out.append(Finding("ok", f"report: {len(mism)} image/label size mismatches "
                           f"({rule}){': ' + real.summarize(names) if names else ''}; "
                           f"{len(excluded)} pairs excluded"))
        wrong = wrong_size_entries(report, ids)
        if wrong and not full:  # --full measures every pair below
            out.append(Finding("problem", _describe_wrong_sizes(root, wrong),
                               _wrong_size_fix(root, list_file)))
    if not full:
        return out + layout.first_decodes(LAYOUT, root, "train", found)
    return (out + layout.decode_findings(LAYOUT, root, "train", found, what)
            + _check_label_sizes(root, found.pairs, excluded, list_file))


def _check_label_sizes(root: Path, names: Sequence[str], excluded: set[str],
                       list_file) -> list[Finding]:
    """``doctor --full``: every pair's sizes (read from the PNG headers): one summary line, then
    one problem per label too far off its image's size to be its label."""
    wrong = []
    for name in names:
        try:
            image_wh = real.png_size(root / "images" / name)
            label_wh = real.png_size(root / "labels" / name)
        except real.DatasetError:
            continue  # an undecodable file: decode_all names it
        if name not in excluded and not label_size_fits(image_wh, label_wh):
            wrong.append(Finding(
                "problem", f"{root / 'labels' / name} is {label_wh[0]}x{label_wh[1]} but its image "
                f"{root / 'images' / name} is {image_wh[0]}x{image_wh[1]}: beyond the few pixels "
                "that are resized, it is not this image's label", _wrong_size_fix(root, list_file)))
    summary = Finding("problem" if wrong else "ok",
                      f"label sizes: {len(names) - len(wrong)}/{len(names)} labels within a few "
                      "pixels of their image's size")
    return [summary, *wrong]
