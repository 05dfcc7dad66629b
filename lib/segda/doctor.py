"""``python -m segda.doctor --dataset gta5|cityscapes|synthia --root PATH [--full] [--list ...]``

Looks at a dataset folder and prints, line by line, what is present, what is missing and the
command that fixes it. Exit status: 0 when the dataset is ready to train/evaluate on (warnings
allowed), 1 when something must be fixed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from segda.data import cityscapes, gta5, synthia
from segda.data.checks import Finding
from segda.data.prepare_cli import add_list_argument, parse_lists

__all__ = ["DATASETS", "Finding", "diagnose", "main", "run"]

# Each dataset module knows its layout: it provides check(root) and PREPARE_COMMAND.
DATASETS = {m.NAME: m for m in (gta5, cityscapes, synthia)}
_MARK = {"ok": "[ok]     ", "warn": "[warn]   ", "problem": "[PROBLEM]"}


def diagnose(dataset: str, root: str | Path, lists: dict[str, str] | None = None,
             full: bool = False) -> list[Finding]:
    """The findings of ``dataset``'s module about ``root``; ``lists`` (split -> list file)
    replaces official lists, as the prepare scripts' ``--list``; ``full`` decodes every file."""
    root = Path(root)
    module = DATASETS[dataset]
    if root.exists() and not root.is_dir():
        return [Finding("problem", f"{dataset} root {root} is a file, not a folder",
                        "give --root the folder that holds the dataset (the folder "
                        "data_scripts/README.md names)")]
    if not root.is_dir():
        return [Finding("problem", f"{dataset} root does not exist: {root}",
                        f"download the dataset (data_scripts/README.md), then run: "
                        f"{module.PREPARE_COMMAND.format(root=root)}")]
    return module.check(root, lists=lists, full=full)


def run(dataset: str, root: str | Path, write: Callable[[str], None] = print,
        lists: dict[str, str] | None = None, full: bool = False) -> int:
    findings = diagnose(dataset, root, lists, full)
    write(f"segda doctor: {dataset} at {Path(root)}")
    for f in findings:
        write(f"{_MARK[f.level]} {f.message}")
        if f.fix and f.level != "ok":
            write(f"          fix: {f.fix}")
    problems = sum(f.level == "problem" for f in findings)
    write("ready." if not problems else f"{problems} problem(s) to fix.")
    return 1 if problems else 0


def main(argv: list[str] | None = None, prog: str = "python -m segda.doctor") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split(
        "\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--root", required=True, help="dataset folder")
    add_list_argument(parser)
    parser.add_argument("--full", action="store_true",
                        help="decode every file (slow: minutes on the full datasets) and list "
                        "every bad one; by default only the first file of each kind is decoded")
    args = parser.parse_args(argv)
    lists = parse_lists(args.list, DATASETS[args.dataset].SPLITS, parser)
    return run(args.dataset, args.root, lists=lists, full=args.full)


if __name__ == "__main__":
    sys.exit(main())
