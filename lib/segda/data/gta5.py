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

Here: the :data:`LAYOUT` (:mod:`segda.data.layout` opens, surveys and checks it), the dataset,
:func:`prepare` (``data_scripts/prepare_gta5.py``) and :func:`check` (the doctor).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from segda.data import checks, layout, real
from segda.data.checks import Finding
from segda.data.layout import Layout
from segda.data.stats import label_class_counts
from segda.io import sha256
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


LAYOUT = Layout(
    name=NAME, title="GTA5", prepare_command=PREPARE_COMMAND, splits=SPLITS,
    images="images", labels="labels", image_suffix=".png", source_suffix=".png",
    train_id_suffix=LABEL_SUFFIX, pattern=re.compile(r"^\d{5}\.png$"),
    official=lambda split: official_ids(), count=lambda split: GTA5_COUNT,
    download=(f"download the 10 image and 10 label zips from {DOWNLOAD_PAGE} and extract them "
              "into {root}"),
    no_images=lambda root, folder: (
        f"no images in {folder}: GTA5 expects <root>/images/NNNNN.png and "
        f"<root>/labels/NNNNN.png. Download from {DOWNLOAD_PAGE}, then run: {prepare_hint(root)}"),
    too_few=("{folder} holds {found} of the {count} GTA5 images; missing: {missing}. Extract "
             "all 10 image archives, or pass ids=[...] to use a subset."),
)


def train_id_name(name: str) -> str:
    return LAYOUT.train_id_name(name)


def prepare_hint(root: str | Path, list_file: str | Path | None = None) -> str:
    return LAYOUT.hint(root, {"train": list_file})


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
            f"{prepare_hint(root, list_file)} --exclude-mismatched")


def wrong_size_entries(report: dict, names: Sequence[str] | None = None) -> list[dict]:
    """The report's size mismatches (of ``names``, default all) too far off to be resized and
    not excluded."""
    wanted = None if names is None else set(names)
    return [m for m in report.get("size_mismatches", [])
            if (wanted is None or m["name"] in wanted) and not m.get("excluded")
            and not label_size_fits(m["image"], m["label"])]


class GTA5(real.SegmentationFiles):
    """GTA5 images with converted train-id labels.

    ``ids=None`` uses the full official list and then insists on all 24,966 images being
    present (:class:`~segda.data.real.CountMismatchError` otherwise); pass a list of names
    (``"00001.png"``), or ``list_file``, a file with one name per line (as
    ``gta5_list/train.txt``), for a subset.
    Pairs excluded by the prepare step (report) are skipped unless ``exclude`` is given
    explicitly. Defaults are the official ones: 1280x720, caffe normalisation, no flip.
    """

    dataset_name = NAME
    prepare_command = PREPARE_COMMAND

    def __init__(self, root: str | Path, size: tuple[int, int] | None = (1280, 720),
                 label_size: tuple[int, int] | str | None = "image", normalization: str = "caffe",
                 flip: bool = False, flip_seed: int = 0, ids: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None, check_labels: bool = True,
                 list_file: str | Path | None = None) -> None:
        root = real.require_root(root, NAME, PREPARE_COMMAND)
        ids = layout.given_names(ids, list_file, "ids")
        ids = layout.open_images(LAYOUT, root, "train", ids, list_file)
        report = real.read_report(root) or {}
        skip = set(report.get("excluded", []) if exclude is None else exclude)
        ids = [i for i in ids if i not in skip]
        wrong = wrong_size_entries(report, ids)
        if wrong:
            raise real.SizeMismatchError(wrong_size_message(root, wrong, list_file))
        labels = layout.open_train_ids(LAYOUT, root, "train", ids, list_file)
        super().__init__(root, images=[root / "images" / i for i in ids], labels=labels, names=ids,
                         size=size, label_size=label_size, normalization=normalization, flip=flip,
                         flip_seed=flip_seed, check_labels=check_labels)


# ------------------------------------------------------------------------------- preparation


def _convert_one(args: tuple[str, str, str, bool, bool]) -> dict:
    """Convert one palette label to train ids; returns what the report records about it."""
    image_path, label_path, out_path, exclude_mismatched, strict = args
    name = Path(image_path).name
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
    entry: dict = {"name": name}
    unknown = np.unique(ids[ids > MAX_LABEL_ID]).tolist()
    if unknown:
        if strict:
            raise real.LabelValueError(f"{label_path}: label ids {unknown} are not Cityscapes ids 0..33")
        entry["unknown_ids"] = unknown  # mapped to ignore like every other non-train id
    image_wh = real.png_size(image_path)
    label_wh = (ids.shape[1], ids.shape[0])
    if label_wh != image_wh:
        entry["size_mismatch"] = {"image": list(image_wh), "label": list(label_wh)}
        if exclude_mismatched:
            entry["excluded"] = True
            return entry
        if not label_size_fits(image_wh, label_wh):
            return entry  # not converted: prepare names it once every label is done
        ids = np.asarray(Image.fromarray(ids).resize(image_wh, Image.NEAREST))
    train = label_id_lut()[ids]
    real.write_label_png(out_path, train)
    entry["class_pixels"] = label_class_counts(train).tolist()
    return entry


def scan(root: str | Path, ids: Sequence[str] | None = None) -> dict:
    """Counts of original images/labels and which of the pairs named by ``ids`` (default: the
    official list) are missing."""
    found = layout.survey(LAYOUT, Path(root), "train", ids)
    return {
        "images": len(found.image_files),
        "labels": len({n for n in found.label_files if LAYOUT.pattern.match(n)}),
        "converted": len({n for n in found.label_files if n.endswith(LABEL_SUFFIX)}),
        "missing_images": found.missing_images,
        "missing_labels": found.missing_sources,
        "unconverted": [i for i in found.names if i in found.sources and i not in found.converted],
        "unexpected_images": sorted(found.image_files - set(found.names)),
    }


def hash_archives(folder: str | Path) -> dict[str, dict]:
    """SHA-256 of the GTA5 zips in ``folder``; checked against ``ARCHIVE_SHA256`` where known."""
    out = {}
    for path in sorted(Path(folder).glob("*.zip")):
        digest = sha256(path)
        known = ARCHIVE_SHA256.get(path.name)
        status = "unknown (no published hash)" if known is None else (
            "ok" if digest == known else "MISMATCH"
        )
        out[path.name] = {"sha256": digest, "status": status}
        if status == "MISMATCH":
            raise real.DatasetError(f"{path}: SHA-256 {digest} != published {known}; download it again")
    return out


def _entries_from_report(report: dict) -> dict[str, dict]:
    """Per-file entries of an earlier report, so re-running prepare skips finished work."""
    entries = {n: {"name": n, "class_pixels": c} for n, c in report.get("class_pixels", {}).items()}
    for m in report.get("size_mismatches", []):
        e = entries.setdefault(m["name"], {"name": m["name"]})
        e["size_mismatch"] = {"image": m["image"], "label": m["label"]}
        if m.get("excluded"):
            e["excluded"] = True
    for n, ids in report.get("unknown_label_ids", {}).items():
        if n in entries:
            entries[n]["unknown_ids"] = ids
    return entries


def _reusable(prev: dict | None, out: Path, exclude_mismatched: bool) -> bool:
    if prev is None:
        return False
    if "size_mismatch" in prev:  # reuse only if the same rule was applied to it
        if exclude_mismatched != bool(prev.get("excluded")):
            return False
        return bool(prev.get("excluded")) or out.exists()
    return out.exists() and "class_pixels" in prev


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
    root = real.require_root(root, NAME, PREPARE_COMMAND)
    list_file = real.check_list_splits(lists, SPLITS).get("train")
    listed = real.read_list(list_file) if list_file else None
    counts = scan(root, listed)
    expected = f"{len(listed)} named by {list_file}" if listed else f"official count {GTA5_COUNT}"
    log(f"GTA5 at {root}: {counts['images']} images, {counts['labels']} labels "
        f"({expected}), {counts['converted']} already converted")
    pairs_missing = sorted(set(counts["missing_images"]) | set(counts["missing_labels"]))
    if pairs_missing and listed is not None:
        raise real.MissingFilesError(
            f"{len(pairs_missing)} GTA5 pairs named by list {list_file} are incomplete in {root} "
            f"(images missing: {real.summarize(counts['missing_images'], 3) or 'none'}; labels "
            f"missing: {real.summarize(counts['missing_labels'], 3) or 'none'})"
        )
    if pairs_missing and not allow_partial:
        raise real.CountMismatchError(
            f"{len(pairs_missing)} of the {GTA5_COUNT} GTA5 pairs are incomplete "
            f"(images missing: {len(counts['missing_images'])}, labels missing: "
            f"{len(counts['missing_labels'])}; e.g. {real.summarize(pairs_missing)}). Extract all "
            f"archives from {DOWNLOAD_PAGE}, or pass --allow-partial to convert what is there."
        )
    old = real.read_report(root) or {}
    old_entries = _entries_from_report(old)
    skip = set(pairs_missing)
    ids = [i for i in (listed or official_ids()) if i not in skip]
    jobs, entries = [], []
    for name in ids:
        out = root / "labels" / train_id_name(name)
        prev = old_entries.get(name)
        if not overwrite and _reusable(prev, out, exclude_mismatched):
            entries.append(prev)
        else:
            jobs.append((str(root / "images" / name), str(root / "labels" / name), str(out),
                         exclude_mismatched, strict_ids))
    log(f"converting {len(jobs)} labels ({len(entries)} reused)")
    entries += real.run_conversions(_convert_one, jobs, workers, chunksize=64)
    if listed is not None:  # a subset: keep what earlier runs recorded about the other pairs
        done = set(ids)
        entries += [e for n, e in old_entries.items() if n not in done]
    entries.sort(key=lambda e: e["name"])
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
        "counts": {k: counts[k] for k in ("images", "labels")},
        "missing_pairs": pairs_missing,
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
    if list_file:
        report["list"] = str(list_file)
    if archives is not None:
        report["archive_sha256"] = hash_archives(archives)
    path = real.write_report(root, report)
    log(f"wrote {path}: {len(report['class_pixels'])} labels converted, "
        f"{len(mismatched)} size mismatches, {len(report['excluded'])} excluded")
    wrong = wrong_size_entries(report, ids)
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
    prep = prepare_hint(root, list_file)
    report = real.read_report(root)
    excluded = set((report or {}).get("excluded", []))
    wrong_size = {m["name"] for m in wrong_size_entries(report or {}, ids)}  # named below
    todo = sorted(found.sources - found.converted - excluded - wrong_size)
    converted = sum(n.endswith(LABEL_SUFFIX) for n in found.label_files)
    if any(LAYOUT.pattern.match(n) for n in found.label_files) and converted == 0:
        out.append(Finding("problem", "no converted train-id labels (labels/*_labelTrainIds.png)",
                           prep))
    elif todo:
        out.append(Finding("problem", f"{len(todo)} labels not converted yet "
                           f"(e.g. {real.summarize(todo, 3)})", prep))
    elif converted:
        out.append(Finding("ok", f"converted train-id labels: {converted}"))
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
    first = next((i for i in ids if i in found.images), None)
    if full:
        out += layout.decode_findings(LAYOUT, root, "train", found, what)
        out += _check_label_sizes(root, found.pairs, excluded, list_file)
    elif first is not None:
        out.append(checks.decodes(root / "images" / first))
        conv = root / "labels" / train_id_name(first)
        if conv.exists():
            out.append(checks.decodes(conv, label=True))
    return out


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
