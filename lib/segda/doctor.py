"""``python -m segda.doctor --dataset gta5|cityscapes|synthia --root PATH``

Looks at a dataset folder and prints, line by line, what is present, what is missing and the
command that fixes it. Exit status: 0 when the dataset is ready to train/evaluate on (warnings
allowed), 1 when something must be fixed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segda.data import cityscapes as cs
from segda.data import gta5, synthia
from segda.data.real import (
    DatasetError,
    list_files,
    png_size,
    prepare_hint,
    read_label,
    read_report,
    read_rgb,
    summarize,
)


@dataclass
class Finding:
    level: str  # "ok" | "warn" | "problem"
    message: str
    fix: str = ""


def _decodes(path: Path, label: bool = False) -> Finding:
    try:
        (read_label if label else read_rgb)(path)
    except DatasetError as err:
        return Finding("problem", str(err), "extract the file again from its archive")
    return Finding("ok", f"decodes: {path}")


def _count(found: int, expected: int, what: str, fix: str, examples: list[str]) -> Finding:
    if found == expected:
        return Finding("ok", f"{what}: {found}/{expected}")
    more = f" (missing e.g. {summarize(examples, 3)})" if examples else ""
    return Finding("problem", f"{what}: {found}/{expected}{more}", fix)


def check_gta5(root: Path) -> list[Finding]:
    fix_download = (f"download the 10 image and 10 label zips from {gta5.DOWNLOAD_PAGE} and "
                    f"extract them into {root}")
    s = gta5.scan(root)
    out = [
        _count(s["images"], gta5.GTA5_COUNT, f"images in {root / 'images'}", fix_download,
               s["missing_images"]),
        _count(s["labels"], gta5.GTA5_COUNT, f"labels in {root / 'labels'}", fix_download,
               s["missing_labels"]),
    ]
    if s["unexpected_images"]:
        out.append(Finding("warn", f"{len(s['unexpected_images'])} image names outside the "
                           f"official list (e.g. {summarize(s['unexpected_images'], 3)}); ignored"))
    prep = prepare_hint("gta5", root)
    report = read_report(root)
    excluded = set((report or {}).get("excluded", []))
    todo = sorted(set(s["unconverted"]) - excluded)
    if s["labels"] and s["converted"] == 0:
        out.append(Finding("problem", "no converted train-id labels (labels/*_labelTrainIds.png)",
                           prep))
    elif todo:
        out.append(Finding("problem", f"{len(todo)} labels not converted yet "
                           f"(e.g. {summarize(todo, 3)})", prep))
    elif s["converted"]:
        out.append(Finding("ok", f"converted train-id labels: {s['converted']}"))
    if report is None:
        out.append(Finding("problem" if s["converted"] else "warn",
                           "no prepare report (segda_prepare_report.json)", prep))
    else:
        mism = report.get("size_mismatches", [])
        rule = report.get("size_mismatch_rule", "?")
        names = [m["name"] for m in mism]
        out.append(Finding("ok", f"report: {len(mism)} image/label size mismatches "
                           f"({rule}){': ' + summarize(names) if names else ''}; "
                           f"{len(excluded)} pairs excluded"))
    absent = set(s["missing_images"])
    first = next((i for i in gta5.official_ids() if i not in absent), None)
    if first is not None:
        out.append(_decodes(root / "images" / first))
        conv = root / "labels" / gta5.train_id_name(first)
        if conv.exists():
            out.append(_decodes(conv, label=True))
    return out


def check_cityscapes(root: Path) -> list[Finding]:
    out = []
    if (root / "data" / "leftImg8bit").is_dir() and not (root / "leftImg8bit").is_dir():
        return [Finding("problem", f"{root} has AdaptSegNet's extra data/ level",
                        f"use --root {root / 'data'}")]
    download = cs.DOWNLOAD_HELP.format(root=root)
    prep = prepare_hint("cityscapes", root)
    try:
        import cityscapesscripts  # noqa: F401
    except ImportError:
        out.append(Finding("warn", "cityscapesscripts is not installed (needed to prepare labels)",
                           "pip install cityscapesscripts"))
    for split in ("train", "val"):
        names = cs.official_list(split)
        images = cs.present_names(root / "leftImg8bit" / split, names)
        miss = [n for n in names if n not in images]
        out.append(_count(len(names) - len(miss), len(names), f"{split} images (official list)",
                          download, miss))
        label_dir = root / "gtFine" / split
        ids = [cs.stem(n) + cs.LABEL_IDS_SUFFIX for n in names]
        present = cs.present_names(label_dir, ids + [cs.stem(n) + cs.TRAIN_IDS_SUFFIX for n in names])
        miss_ids = [i for i in ids if i not in present]
        out.append(_count(len(ids) - len(miss_ids), len(ids), f"{split} gtFine labelIds",
                          download, miss_ids))
        train_ids = [cs.stem(n) + cs.TRAIN_IDS_SUFFIX for n in names]
        miss_t = [t for t in train_ids if t not in present]
        if not miss_t:
            out.append(Finding("ok", f"{split} train-id labels: {len(train_ids)}"))
        else:
            # val labels are needed for evaluation; train labels only for an oracle run
            level = "problem" if split == "val" else "warn"
            why = "" if split == "val" else " (only needed to train an oracle)"
            out.append(Finding(level, f"{split} train-id labels: {len(train_ids) - len(miss_t)}/"
                               f"{len(train_ids)}{why}", prep))
        if len(miss) < len(names):
            first = next(n for n in names if n in images)
            out.append(_decodes(root / "leftImg8bit" / split / first))
    return out


def check_synthia(root: Path) -> list[Finding]:
    prep = prepare_hint("synthia", root)
    fix = f"extract SYNTHIA_RAND_CITYSCAPES into {root} (RGB/ and GT/LABELS/)"
    label_dir = root.joinpath(*synthia.LABEL_DIR)
    images = sorted(n for n in list_files(root / "RGB") if synthia.NAME_PATTERN.match(n))
    files = list_files(label_dir)
    labels = sorted(n for n in files if synthia.NAME_PATTERN.match(n))
    out = [
        _count(len(images), synthia.SYNTHIA_COUNT, f"images in {root / 'RGB'}", fix, []),
        _count(len(labels), synthia.SYNTHIA_COUNT, f"labels in {label_dir}", fix, []),
    ]
    todo = [n for n in labels if synthia.train_id_name(n) not in files]
    if not labels:
        pass
    elif todo:
        out.append(Finding("problem", f"{len(todo)} labels not converted "
                           f"(e.g. {summarize(todo, 3)})", prep))
    else:
        out.append(Finding("ok", f"converted train-id labels: {len(labels)}"))
    if labels:
        try:
            raw = synthia.decode(label_dir / labels[0])
            if raw.dtype.itemsize == 1:
                out.append(Finding("warn", f"{labels[0]} is 8-bit; SYNTHIA's GT/LABELS are 16-bit "
                                   "(is this the GT/COLOR folder?)", fix))
            else:
                out.append(Finding("ok", f"{labels[0]}: {raw.shape[0]} channels, 16-bit"))
        except DatasetError as err:
            out.append(Finding("problem", str(err), "extract the file again"))
    if images:
        out.append(_decodes(root / "RGB" / images[0]))
        try:
            w, h = png_size(root / "RGB" / images[0])
            if (w, h) != synthia.NATIVE_SIZE:
                out.append(Finding("warn", f"{images[0]} is {w}x{h}, SYNTHIA-RAND-CITYSCAPES "
                                   f"images are {synthia.NATIVE_SIZE[0]}x{synthia.NATIVE_SIZE[1]}"))
        except DatasetError as err:
            out.append(Finding("problem", str(err)))
    return out


CHECKS: dict[str, Callable[[Path], list[Finding]]] = {
    "gta5": check_gta5, "cityscapes": check_cityscapes, "synthia": check_synthia,
}
_MARK = {"ok": "[ok]     ", "warn": "[warn]   ", "problem": "[PROBLEM]"}


def diagnose(dataset: str, root: str | Path) -> list[Finding]:
    root = Path(root)
    if not root.is_dir():
        return [Finding("problem", f"{dataset} root does not exist: {root}",
                        f"download the dataset (data_scripts/README.md), then run: "
                        f"{prepare_hint(dataset, root)}")]
    return CHECKS[dataset](root)


def run(dataset: str, root: str | Path, write: Callable[[str], None] = print) -> int:
    findings = diagnose(dataset, root)
    write(f"segda doctor: {dataset} at {Path(root)}")
    for f in findings:
        write(f"{_MARK[f.level]} {f.message}")
        if f.fix and f.level != "ok":
            write(f"          fix: {f.fix}")
    problems = sum(f.level == "problem" for f in findings)
    write("ready." if not problems else f"{problems} problem(s) to fix.")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segda.doctor", description=__doc__.split(
        "\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(CHECKS))
    parser.add_argument("--root", required=True, help="dataset folder")
    args = parser.parse_args(argv)
    return run(args.dataset, args.root)


if __name__ == "__main__":
    sys.exit(main())
