"""The command line every ``data_scripts/prepare_<dataset>.py`` runs, given its dataset module.

A dataset module (:mod:`segda.data.gta5`, :mod:`segda.data.cityscapes`,
:mod:`segda.data.synthia`) provides ``prepare(root, ..., log)`` and
``add_prepare_arguments(parser)`` for its own options; the options every dataset has, and the
error handling, are here once. Exit status: 0 done, 1 the data needs fixing (the message says
how), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from segda.data.real import DatasetError


def build_parser(dataset: ModuleType, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help=f"the {dataset.NAME} folder")
    parser.add_argument("--allow-partial", action="store_true",
                        help="convert the files present instead of requiring the official count")
    parser.add_argument("--overwrite", action="store_true", help="convert again even if done")
    parser.add_argument("--workers", type=int, default=1, help="processes for the conversion")
    dataset.add_prepare_arguments(parser)
    return parser


def main(dataset: ModuleType, argv: list[str] | None = None, description: str | None = None) -> int:
    """Parse ``argv`` and run ``dataset.prepare``; a :class:`DatasetError` is printed, not raised."""
    args = build_parser(dataset, description).parse_args(argv)
    try:
        dataset.prepare(**vars(args))
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0

