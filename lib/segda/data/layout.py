"""The protocol GTA5, Cityscapes and SYNTHIA share, written once: a :class:`Layout` says where a
dataset's files lie, and the functions here open, survey, prepare and check any such folder.

A dataset is a list of names (an official list, a user's list file, or for SYNTHIA every image
in its folder); each name has an image, an original label (palette, label-id or 16-bit PNG) and
the train-id label the prepare step writes beside it. Here once: the base class that opens a
dataset (:class:`LayoutDataset`), prepare's survey, refusal of an incomplete download,
conversion loop (reusing an earlier report's entries) and report, and the doctor's counts,
conversion line and decoding. What stays in a dataset module is what is its own: the label
encoding (its ``convert_one``), the report's extra fields, its download and its own checks
(GTA5's label sizes, Cityscapes' colour labelIds, SYNTHIA's bit depth).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segda.data import checks
from segda.data.checks import Finding
from segda.data.real import (
    CountMismatchError,
    DatasetError,
    LabelValueError,
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
from segda.io import sha256


@dataclass(frozen=True)
class Layout:
    """Where one dataset's files lie, and the words its messages use for them."""

    name: str  # "gta5": the doctor's --dataset
    title: str  # how messages name the dataset ("GTA5 images ... missing")
    prepare_command: str  # template with {root}
    splits: tuple[str, ...]
    images: str  # image folder under the root; "{split}" is replaced by the split
    labels: str  # folder of the original labels and of the train-id labels beside them
    image_suffix: str  # what the name of a source or train-id label replaces
    source_suffix: str
    train_id_suffix: str
    # The names of a split, and their number; called each time, so that they read the dataset
    # module's constants when used. ``official=None``: every image of the folder (SYNTHIA).
    official: Callable[[str], list[str]] | None
    count: Callable[[str], int]
    download: str  # what brings the files ({root}), for the doctor's fixes
    pattern: re.Pattern | None = None  # the dataset's own file names in a flat folder
    nested: bool = False  # names are ``city/file``: one folder read per city
    source_depth: str = "label8"  # what :func:`checks.decode_all` expects of an original label
    # The fix when a root is a known wrong folder (Cityscapes: AdaptSegNet's one level above).
    misplaced: Callable[[Path], str | None] = lambda root: None

    def where(self, split: str) -> str:
        """How messages name a split: ``GTA5``, ``Cityscapes val``."""
        return self.title if len(self.splits) == 1 else f"{self.title} {split}"

    def fix(self, root: Path) -> str:
        """How to get missing files: the right root for a misplaced one, else the download."""
        return self.misplaced(root) or self.download.format(root=root)

    def folder(self, root: Path, kind: str, split: str) -> Path:
        """``kind`` is ``"images"`` or ``"labels"``."""
        return root / getattr(self, kind).format(split=split)

    def stem(self, name: str) -> str:
        return name[: -len(self.image_suffix)] if name.endswith(self.image_suffix) else name

    def source_name(self, name: str) -> str:
        return self.stem(name) + self.source_suffix

    def train_id_name(self, name: str) -> str:
        return self.stem(name) + self.train_id_suffix

    def hint(self, root: str | Path, lists: Mapping[str, str | Path] | str | Path | None = None
             ) -> str:
        """The prepare command for ``root``, with the list files that replace official lists
        (``--list FILE`` for a one-list dataset, ``--list split=FILE`` otherwise); a bare
        ``lists`` is the file of the only split."""
        if lists is not None and not isinstance(lists, Mapping):
            lists = {self.splits[0]: lists}
        if len(self.splits) == 1:
            extra = "".join(f" --list {path}" for path in (lists or {}).values() if path)
        else:
            extra = "".join(f" --list {split}={path}" for split, path in (lists or {}).items())
        return self.prepare_command.format(root=root) + extra

    def files(self, folder: Path, names: Sequence[str] = ()) -> set[str]:
        """The names of the files in ``folder`` (nested: of ``names``' cities; flat: those that
        match :attr:`pattern`), one directory read each."""
        if self.nested:
            cities = sorted({n.split("/", 1)[0] for n in names if "/" in n})
            return {f"{city}/{f}" for city in cities for f in list_files(folder / city)}
        found = list_files(folder)
        return found if self.pattern is None else {n for n in found if self.pattern.match(n)}


# ---------------------------------------------------------------------------------- opening


def given_names(names: Sequence[str] | None, list_file: str | Path | None,
                argument: str) -> list[str] | None:
    """The names a dataset is opened with: ``names`` (the constructor's ``argument``), or those
    of ``list_file``; None for the official set."""
    if list_file and names is not None:
        raise ValueError(f"pass {argument} or list_file, not both")
    if list_file:
        return read_list(list_file)
    return None if names is None else [str(n) for n in names]


def open_images(layout: Layout, root: Path, split: str, names: list[str] | None,
                list_file: str | Path | None = None) -> list[str]:
    """The names to open, each image present: the official set (every one of it) when
    ``names`` is None. Raises naming the folder, the missing files and the fix."""
    folder = layout.folder(root, "images", split)
    wanted = names if names is not None else layout.official(split) if layout.official else []
    present = layout.files(folder, wanted)
    # An empty flat folder, or an absent split folder: the download or the root is wrong.
    if not present and not (layout.nested and folder.is_dir()):
        raise MissingFilesError(f"no {layout.where(split)} images in {folder}. Fix: "
                                f"{layout.fix(root)}")
    if names is None:
        count = layout.count(split)
        if layout.official is None:
            names, missing, found = sorted(present), [], len(present)
        else:
            names = wanted
            missing = [n for n in names if n not in present]
            found = count - len(missing)
        if missing or found != count:
            raise CountMismatchError(
                f"{folder} holds {found} of the {count} {layout.where(split)} images"
                f"{'; missing: ' + summarize(missing) if missing else ''}. Fix: "
                f"{layout.fix(root)}, or open a subset (a list of names, or list_file).")
        return names
    missing = [n for n in names if n not in present]
    if missing:
        raise MissingFilesError(f"{layout.title} images{from_list(list_file)} missing in "
                                f"{folder}: {summarize(missing)}")
    return names


def open_train_ids(layout: Layout, root: Path, split: str, names: Sequence[str],
                   list_file: str | Path | None = None) -> list[Path]:
    """The train-id label of each name; raises naming the absent ones and the prepare command."""
    folder = layout.folder(root, "labels", split)
    wanted = [layout.train_id_name(n) for n in names]
    present = layout.files(folder, wanted) if layout.nested else list_files(folder)
    absent = [w for w in wanted if w not in present]
    if absent:
        what = f"train-id labels{from_list(list_file)}"
        lists = {split: list_file} if list_file else None
        raise MissingFilesError(f"{len(absent)} {what} missing in {folder} (e.g. "
                                f"{summarize(absent, 3)}). Run: {layout.hint(root, lists)}")
    return [folder / w for w in wanted]


class LayoutDataset(SegmentationFiles):
    """A dataset opened through its class's :attr:`layout`: the root checked, the names given
    (``names`` or ``list_file``; None: the official set) each with its image, :meth:`usable`
    of them kept, and (``with_labels``) each with its train-id label."""

    layout: Layout

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.dataset_name, cls.prepare_command = cls.layout.name, cls.layout.prepare_command

    def __init__(self, root: str | Path, split: str, names: Sequence[str] | None,
                 list_file: str | Path | None, argument: str, with_labels: bool = True,
                 **options) -> None:
        root = require_root(root, self.layout.name, self.layout.prepare_command)
        names = given_names(names, list_file, argument)
        names = self.usable(root, open_images(self.layout, root, split, names, list_file),
                            list_file)
        labels = open_train_ids(self.layout, root, split, names, list_file) if with_labels \
            else None
        folder = self.layout.folder(root, "images", split)
        super().__init__(root, images=[folder / n for n in names], labels=labels, names=names,
                         **options)

    def usable(self, root: Path, names: list[str], list_file: str | Path | None) -> list[str]:
        """Which of ``names`` (each image present) to open: all of them."""
        return names


# ---------------------------------------------------------------------------------- survey


@dataclass
class Survey:
    """What of a split's names is on disk (used by prepare and by the doctor)."""

    names: list[str]  # the list: official, a list file's, or (SYNTHIA) every file found
    images: set[str]  # names whose image is there
    sources: set[str]  # names whose original label is there
    converted: set[str]  # names whose train-id label is there
    image_files: set[str]  # the image folder's own files (flat: all, nested: of the cities)
    label_files: set[str]  # the label folder's files, originals and converted

    @property
    def missing_images(self) -> list[str]:
        return [n for n in self.names if n not in self.images]

    @property
    def missing_sources(self) -> list[str]:
        return [n for n in self.names if n not in self.sources]

    @property
    def pairs(self) -> list[str]:
        """The names with both image and original label."""
        return [n for n in self.names if n in self.images and n in self.sources]


def survey(layout: Layout, root: Path, split: str, names: Sequence[str] | None = None) -> Survey:
    """Which of ``names`` (default: the official list; SYNTHIA: every image or label found)
    have their image, original label and train-id label."""
    if names is None and layout.official is not None:
        names = layout.official(split)
    label_dir = layout.folder(root, "labels", split)
    image_files = layout.files(layout.folder(root, "images", split), names or ())
    wanted = [f(n) for n in names or () for f in (layout.source_name, layout.train_id_name)]
    label_files = layout.files(label_dir, wanted) if layout.nested else list_files(label_dir)
    if names is None:  # no list: every image, and every original label
        originals = {n for n in label_files if layout.pattern is None or layout.pattern.match(n)}
        names = sorted(image_files | {n for n in originals})
    names = list(names)
    return Survey(
        names=names,
        images={n for n in names if n in image_files},
        sources={n for n in names if layout.source_name(n) in label_files},
        converted={n for n in names if layout.train_id_name(n) in label_files},
        image_files=image_files,
        label_files=label_files,
    )


# ---------------------------------------------------------------------------------- prepare


def survey_download(layout: Layout, root: Path, split: str, list_file: str | Path | None,
                    allow_partial: bool, log: Callable[[str], None]) -> Survey:
    """Prepare's start on a split: its names (``list_file``'s, else the official set) surveyed
    and logged, then refused when incomplete: every file a list names must be there; without
    a list, every pair of the official set (unless ``allow_partial``)."""
    found = survey(layout, root, split, read_list(list_file) if list_file else None)
    where, n = layout.where(split), len(found.names)
    named = f"named by {list_file}" if list_file else "official set"
    log(f"{where} at {root}: {len(found.images)}/{n} images, {len(found.sources)}/{n} labels "
        f"({named}), {len(found.converted)} already converted")
    if list_file:
        absent = [f"{layout.images.format(split=split)}/{n}" for n in found.missing_images]
        absent += [f"{layout.labels.format(split=split)}/{layout.source_name(n)}"
                   for n in found.missing_sources]
        if absent:
            raise MissingFilesError(
                f"{where}: {len(absent)} files named by list {list_file} are missing in {root}: "
                f"{summarize(absent)}. Extract them, or leave them out of the list.")
        return found
    unpaired = sorted(set(found.missing_images) | set(found.missing_sources))
    # A dataset without an official list (SYNTHIA) is counted, its names being those found
    # (a name lacks its image or its label: unpaired); the others are checked name by name.
    short = layout.official is None and len(found.images) != layout.count(split)
    if (unpaired or short) and not allow_partial:
        examples = f", e.g. {summarize(unpaired, 3)}" if unpaired else ""
        kind = "unpaired" if layout.official is None else "incomplete"
        raise CountMismatchError(
            f"{where} at {root}: {len(found.images)} images and {len(found.sources)} labels, "
            f"expected {layout.count(split)} pairs ({len(unpaired)} {kind}{examples}). "
            f"Fix: {layout.fix(root)}, or pass --allow-partial to convert what is there.")
    return found


class Conversion(NamedTuple):
    """One label for a dataset's ``convert_one``: its list name, image, original label and
    the train-id label to write."""

    name: str
    image: Path
    source: Path
    out: Path


def new_entry(job: Conversion, ids: np.ndarray, max_id: int, strict: bool, kind: str,
              hint: str = "") -> dict:
    """A label's report entry begun: its name, and the ids above ``max_id`` it holds (mapped to
    ignore as every id without a class; with ``strict``, an error naming the file)."""
    entry: dict = {"name": job.name}
    unknown = np.unique(ids[ids > max_id]).tolist()
    if unknown and strict:
        raise LabelValueError(f"{job.source}: ids {unknown} are not {kind} ids 0..{max_id}{hint}")
    if unknown:
        entry["unknown_ids"] = unknown
    return entry


def write_train_ids(entry: dict, out: Path, train: np.ndarray) -> dict:
    """The train-id label written, its class pixel counts recorded in its ``entry``."""
    write_label_png(out, train)
    entry["class_pixels"] = label_class_counts(train).tolist()
    return entry


def hash_archives(folder: str | Path, known: Mapping[str, str]) -> dict[str, dict]:
    """SHA-256 of the zips in ``folder``, each checked against ``known`` (name -> published
    sum) where it is there; a mismatch is an error naming the file."""
    out = {}
    for path in sorted(Path(folder).glob("*.zip")):
        digest = sha256(path)
        status = "unknown (no published hash)" if path.name not in known else \
            "ok" if digest == known[path.name] else "MISMATCH"
        out[path.name] = {"sha256": digest, "status": status}
        if status == "MISMATCH":
            raise DatasetError(f"{path}: SHA-256 {digest} != published {known[path.name]}; "
                               "download it again")
    return out


def earlier_entries(report: Mapping) -> dict[str, dict]:
    """The per-label entries of an earlier prepare report (class pixel counts, unknown ids),
    so that running prepare again skips finished work."""
    entries = {n: {"name": n, "class_pixels": c} for n, c in report.get("class_pixels", {}).items()}
    for name, ids in report.get("unknown_label_ids", {}).items():
        if name in entries:
            entries[name]["unknown_ids"] = ids
    return entries


def still_converted(entry: Mapping, out: Path) -> bool:
    """Whether an earlier entry stands for its label: it was converted and the file is there."""
    return "class_pixels" in entry and out.exists()


def prepare_list(layout: Layout, root: str | Path, lists: Mapping[str, str | Path] | None,
                 convert_one: Callable[[Conversion], dict], allow_partial: bool, overwrite: bool,
                 workers: int, log: Callable[[str], None],
                 earlier: Callable[[Mapping], dict[str, dict]] = earlier_entries,
                 reusable: Callable[[Mapping, Path], bool] = still_converted):
    """Prepare on a one-list dataset up to its report: the root and list file checked, the
    split surveyed and refused when incomplete, the pairs' labels converted. Returns ``(root,
    list file, survey, earlier report, entries by name)``; the entries keep the earlier ones
    of other names."""
    root = require_root(root, layout.name, layout.prepare_command)
    list_file = check_list_splits(lists, layout.splits).get(layout.splits[0])
    found = survey_download(layout, root, layout.splits[0], list_file, allow_partial, log)
    report = read_report(root) or {}
    return root, list_file, found, report, convert_labels(
        layout, root, layout.splits[0], found.pairs, earlier(report), convert_one, overwrite,
        workers, log, reusable)


def finish_report(root: Path, report: dict, list_file: str | Path | None,
                  log: Callable[[str], None], done: str = "") -> None:
    """The report written at ``root``, naming the list file it was made from; logged."""
    if list_file:
        report["list"] = str(list_file)
    log(f"wrote {write_report(root, report)}{done}")


def convert_labels(layout: Layout, root: Path, split: str, names: Sequence[str],
                   earlier: Mapping[str, dict], convert_one: Callable[[Conversion], dict],
                   overwrite: bool, workers: int, log: Callable[[str], None],
                   reusable: Callable[[Mapping, Path], bool] = still_converted
                   ) -> dict[str, dict]:
    """Prepare's loop: each of ``names``' labels converted by ``convert_one`` (module-level,
    for the ``workers`` processes) unless ``earlier`` holds a ``reusable`` entry for it (never
    with ``overwrite``). Returns the report entries by name: ``names``', after the earlier
    ones of other names."""
    images, labels = layout.folder(root, "images", split), layout.folder(root, "labels", split)
    entries, jobs = [], []
    for name in names:
        out = labels / layout.train_id_name(name)
        if not overwrite and name in earlier and reusable(earlier[name], out):
            entries.append(earlier[name])
        else:
            jobs.append(Conversion(name, images / name, labels / layout.source_name(name), out))
    log(f"converting {len(jobs)} labels ({len(entries)} reused)")
    return {**earlier, **{e["name"]: e for e in entries + run_conversions(convert_one, jobs,
                                                                          workers)}}


# ---------------------------------------------------------------------------------- checks


def read_check_list(lists: Mapping[str, str | Path], split: str,
                    fix: str) -> tuple[list[str] | None, Finding | None]:
    """The names of ``lists[split]`` (None without one), or the finding that it is unreadable."""
    if split not in lists:
        return None, None
    try:
        return read_list(lists[split]), None
    except DatasetError as err:
        return None, Finding("problem", str(err), fix)


def count_findings(layout: Layout, root: Path, split: str, found: Survey, listed: bool,
                   what: Callable[[str], str]) -> list[Finding]:
    """Images and original labels counted against the list (or, SYNTHIA without one, against
    the official count); ``what("images")`` words each line."""
    fix = layout.download.format(root=root)
    if layout.official is None and not listed:
        return [checks.count(len(found.image_files), layout.count(split), what("images"), fix, []),
                checks.count(len(found.sources), layout.count(split), what("labels"), fix, [])]
    miss_img, miss_src = found.missing_images, found.missing_sources
    total = len(found.names)
    return [checks.count(total - len(miss_img), total, what("images"), fix, miss_img),
            checks.count(total - len(miss_src), total, what("labels"), fix,
                         [layout.source_name(n) for n in miss_src])]


def decode_findings(layout: Layout, root: Path, split: str, found: Survey,
                    what: Callable[[str], str], source_fix: str = checks.REEXTRACT,
                    train_id_fix: str = checks.REEXTRACT) -> list[Finding]:
    """``doctor --full``: every image, original label and train-id label present, decoded."""
    images = layout.folder(root, "images", split)
    labels = layout.folder(root, "labels", split)
    return [
        *checks.decode_all([images / n for n in found.names if n in found.images], "image8",
                           what("decode images")),
        *checks.decode_all([labels / layout.source_name(n) for n in found.names
                            if n in found.sources], layout.source_depth, what("decode labels"),
                           source_fix),
        *checks.decode_all([labels / layout.train_id_name(n) for n in found.names
                            if n in found.converted], "label8", what("decode train ids"),
                           train_id_fix),
    ]


def conversion_findings(what: str, converted: int, todo: Sequence[str], fix: str,
                        level: str = "problem", why: str = "") -> list[Finding]:
    """The doctor's line on the train-id labels (``what``): ``ok`` when none is left to
    convert, else ``level`` with a few of those ``todo``; none when there is nothing to
    convert."""
    if not todo:
        return [Finding("ok", f"{what}: {converted}")] if converted else []
    return [Finding(level, f"{what}: {converted}/{converted + len(todo)}{why}, not converted "
                    f"yet e.g. {summarize(todo, 3)}", fix)]


def first_decodes(layout: Layout, root: Path, split: str, found: Survey,
                  train_id: bool = True) -> list[Finding]:
    """The doctor's quick look: the first image present decodes, and (``train_id``) its
    train-id label when converted."""
    first = next((n for n in found.names if n in found.images), None)
    if first is None:
        return []
    out = [checks.decodes(layout.folder(root, "images", split) / first)]
    if train_id and first in found.converted:
        out.append(checks.decodes(layout.folder(root, "labels", split)
                                  / layout.train_id_name(first), label=True))
    return out


def check_counts(layout: Layout, root: Path, lists: Mapping[str, str | Path] | None):
    """The doctor's start on a one-list dataset: the list file read, the split surveyed, its
    images and labels counted. Returns ``(survey, list file, words, findings)``; the survey is
    None when the list file cannot be read (the one finding says so)."""
    lists = check_list_splits(lists, layout.splits)
    split = layout.splits[0]
    listed, unreadable = read_check_list(lists, split, "give an existing list file, one name "
                                         "per line")
    if unreadable:
        return None, None, None, [unreadable]
    found = survey(layout, root, split, listed)
    what = flat_words(layout, root, split, lists.get(split))
    return found, lists.get(split), what, count_findings(layout, root, split, found,
                                                         listed is not None, what)


def flat_words(layout: Layout, root: Path, split: str,
               list_file: str | Path | None) -> Callable[[str], str]:
    """How the doctor's lines name a one-list dataset's files (``images in <folder>``), for
    :func:`count_findings` and :func:`decode_findings`."""
    named = f" (named by {list_file})" if list_file else ""
    images, labels = layout.folder(root, "images", split), layout.folder(root, "labels", split)
    return {"images": f"images in {images}{named}", "labels": f"labels in {labels}{named}",
            "decode images": f"images in {images}", "decode labels": f"labels in {labels}",
            "decode train ids": "converted train-id labels"}.__getitem__
