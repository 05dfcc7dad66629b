"""What ``python -m segda.doctor`` reports about a dataset folder, and the checks all datasets share.

Each dataset module (:mod:`segda.data.gta5`, :mod:`segda.data.cityscapes`,
:mod:`segda.data.synthia`) has a ``check(root) -> list[Finding]`` built from these pieces; the
doctor only prints the findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segda.data.real import DatasetError, read_label, read_rgb, summarize


@dataclass
class Finding:
    """One line of the doctor's report."""

    level: str  # "ok" | "warn" | "problem"
    message: str
    fix: str = ""  # the command or action that fixes a "warn" or "problem"


def count(found: int, expected: int, what: str, fix: str, examples: list[str]) -> Finding:
    """``ok`` when ``found == expected``, else a problem naming a few of the missing files."""
    if found == expected:
        return Finding("ok", f"{what}: {found}/{expected}")
    more = f" (missing e.g. {summarize(examples, 3)})" if examples else ""
    return Finding("problem", f"{what}: {found}/{expected}{more}", fix)


def decodes(path: Path, label: bool = False) -> Finding:
    """Whether one image (or converted train-id label) decodes."""
    try:
        (read_label if label else read_rgb)(path)
    except DatasetError as err:
        return Finding("problem", str(err), "extract the file again from its archive")
    return Finding("ok", f"decodes: {path}")
