"""The command line every ``data_scripts/prepare_<dataset>.py`` runs, given its dataset module.

A dataset module (:mod:`segda.data.gta5`, :mod:`segda.data.cityscapes`,
:mod:`segda.data.synthia`) provides ``prepare(root, ..., lists, log)``, its list splits
``SPLITS`` and ``add_prepare_arguments(parser)`` for its own options; the options every
dataset has, and the error handling, are here once. Exit status: 0 done, 1 the data needs
fixing (the message says how), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from segda.data.real import DatasetError


def add_list_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", action="append", default=[], metavar="[SPLIT=]FILE",
                        help="use the names in FILE (one per line, as the official lists) "
                        "instead of the official list of SPLIT, and skip the official count "
                        "check; SPLIT may be left out when the dataset has one list (GTA5, "
                        "SYNTHIA); repeat for several splits (Cityscapes: train=, val=)")


def parse_lists(values: list[str], splits: tuple[str, ...],
                parser: argparse.ArgumentParser) -> dict[str, str] | None:
    """``["val=lists/val.txt"]`` -> ``{"val": "lists/val.txt"}``; a bare FILE names the
    dataset's only split. Bad values end the program through ``parser.error`` (exit 2)."""
    lists: dict[str, str] = {}
    for value in values:
        split, sep, path = value.partition("=")
        if sep and split not in splits and len(splits) != 1 and "/" not in split:
            parser.error(f"--list {value}: {split!r} is not a split of this dataset; its splits "
                         f"are {', '.join(splits)} (e.g. --list {splits[0]}=FILE)")
        if not sep or split not in splits:  # a bare path (which may itself contain '=')
            if len(splits) != 1:
                parser.error(f"--list {value}: say which split, e.g. --list {splits[0]}=FILE "
                             f"(splits: {', '.join(splits)})")
            split, path = splits[0], value
        if split in lists:
            parser.error(f"--list given twice for {split}")
        if not path.strip():  # '--list val=' would read the working folder '.'
            parser.error(f"--list {value}: no file after '='; give the list file, e.g. "
                         f"--list {split}=lists/{split}.txt")
        lists[split] = path
    return lists or None


def build_parser(dataset: ModuleType, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help=f"the {dataset.NAME} folder")
    parser.add_argument("--allow-partial", action="store_true",
                        help="convert the files present instead of requiring the official count")
    parser.add_argument("--overwrite", action="store_true", help="convert again even if done")
    parser.add_argument("--workers", type=int, default=1, help="processes for the conversion")
    add_list_argument(parser)
    dataset.add_prepare_arguments(parser)
    return parser


def main(dataset: ModuleType, argv: list[str] | None = None, description: str | None = None) -> int:
    """Parse ``argv`` and run ``dataset.prepare``; a :class:`DatasetError` is printed, not raised."""
    parser = build_parser(dataset, description)
    kwargs = vars(parser.parse_args(argv))
    kwargs["lists"] = parse_lists(kwargs.pop("list"), dataset.SPLITS, parser)
    try:
        dataset.prepare(**kwargs)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
