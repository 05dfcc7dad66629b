"""The protocol GTA5, Cityscapes and SYNTHIA share, written once: a :class:`Layout` says where a
dataset's files lie, and the functions here open, survey, prepare and check any such folder.

A dataset is a list of names (an official list, a user's list file, or for SYNTHIA every image
in its folder); each name has an image, an original label (palette, label-id or 16-bit PNG) and
the train-id label the prepare step writes beside it. What stays in a dataset module is what is
its own: the label encoding (its conversion), the report's extra fields, and how its messages
word a missing or incomplete download.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from segda.data import checks
from segda.data.checks import Finding
from segda.data.real import (
    CountMismatchError,
    DatasetError,
    MissingFilesError,
    check_list_splits,
    from_list,
    list_files,
    read_list,
    summarize,
)


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
    no_images: Callable[[Path, Path], str]  # the error for (root, image folder) when it is
    # empty (flat) or absent (nested)
    too_few: str  # the error when the full official set is short ({folder} {found} {count}
    # {split} {missing})
    train_ids: str = "converted labels"  # "{n} <these> missing" ({from_list})
    pattern: re.Pattern | None = None  # the dataset's own file names in a flat folder
    nested: bool = False  # names are ``city/file``: one folder read per city
    source_depth: str = "label8"  # what :func:`checks.decode_all` expects of an original label

    def folder(self, root: Path, kind: str, split: str) -> Path:
        """``kind`` is ``"images"`` or ``"labels"``."""
        return root / getattr(self, kind).format(split=split)

    def stem(self, name: str) -> str:
        return name[: -len(self.image_suffix)] if name.endswith(self.image_suffix) else name

    def source_name(self, name: str) -> str:
        return self.stem(name) + self.source_suffix

    def train_id_name(self, name: str) -> str:
        return self.stem(name) + self.train_id_suffix

    def hint(self, root: str | Path, lists: Mapping[str, str | Path] | None = None) -> str:
        """The prepare command for ``root``, with the list files that replace official lists
        (``--list FILE`` for a one-list dataset, ``--list split=FILE`` otherwise)."""
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
        raise MissingFilesError(layout.no_images(root, folder))
    if names is None:
        count = layout.count(split)
        if layout.official is None:
            names, missing, found = sorted(present), [], len(present)
        else:
            names = wanted
            missing = [n for n in names if n not in present]
            found = count - len(missing)
        if missing or found != count:
            raise CountMismatchError(layout.too_few.format(
                folder=folder, found=found, count=count, split=split, missing=summarize(missing)))
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
        what = layout.train_ids.format(from_list=from_list(list_file))
        lists = {split: list_file} if list_file else None
        raise MissingFilesError(f"{len(absent)} {what} missing in {folder} (e.g. "
                                f"{summarize(absent, 3)}). Run: {layout.hint(root, lists)}")
    return [folder / w for w in wanted]


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


def conversions_due(layout: Layout, root: Path, split: str, names: Sequence[str],
                    done: Mapping[str, object], overwrite: bool) -> list[str]:
    """The names whose train-id label prepare must write: all with ``overwrite``, else those
    not recorded in the report (``done``) or whose file is gone."""
    folder = layout.folder(root, "labels", split)
    return [n for n in names if overwrite or n not in done
            or not (folder / layout.train_id_name(n)).exists()]


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
