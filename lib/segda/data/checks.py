"""What ``python -m segda.doctor`` reports about a dataset folder, and the checks all datasets share.

Each dataset module (:mod:`segda.data.gta5`, :mod:`segda.data.cityscapes`,
:mod:`segda.data.synthia`) has a ``check(root) -> list[Finding]`` built from these pieces; the
doctor only prints the findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from segda.data.real import (
    PNG_COLOUR_TYPES,
    DatasetError,
    decode,
    png_header,
    read_label,
    read_rgb,
    summarize,
)

# What the files of a folder must be, for ``decode_all``: an 8-bit image (any colour type),
# an 8-bit single-channel label (grey, or palette as GTA5's), or SYNTHIA's 16-bit labels.
EXPECTED = {"image8": "8-bit images", "label8": "8-bit single-channel labels",
            "label16": "16-bit labels"}
REEXTRACT = "extract the file again from its archive"


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


def inspect_png(path: Path, expect: str, fix: str = REEXTRACT) -> Finding | None:
    """None if ``path`` decodes completely and is what ``expect`` (a key of :data:`EXPECTED`)
    says, else the finding that names the file and what is wrong with it; ``fix``: what makes
    the file again (extracting it from its archive; a prepared file: the prepare command)."""
    try:
        _, _, depth, colour = png_header(path)
        decode(path)  # every pixel: a truncated or damaged file fails here
    except DatasetError as err:
        return Finding("problem", str(err), fix)
    kind = f"{depth}-bit {PNG_COLOUR_TYPES.get(colour, f'colour type {colour}')} PNG"
    kind = ("an " if kind.startswith(("8-", "8 ")) else "a ") + kind
    if expect == "label16":
        if depth != 16:  # as the quick check: the colour labels (GT/COLOR) look like this
            return Finding("warn", f"{path}: {kind} where a 16-bit label is expected (is this "
                           "the GT/COLOR folder?)", fix)
        return None
    if depth != 8:
        return Finding("problem", f"{path}: {kind} where an 8-bit one is expected", fix)
    if expect == "label8" and colour not in (0, 3):
        return Finding("problem", f"{path}: {kind} where a single-channel (grey or palette) "
                       "label is expected", fix)
    return None


def decode_all(paths: Sequence[Path], expect: str, what: str,
               fix: str = REEXTRACT) -> list[Finding]:
    """Decode every file (``doctor --full``): one summary line, then one finding per bad file
    (``fix``: as for :func:`inspect_png`).

    A progress bar goes to stderr when it is a terminal.
    """
    bad = []
    for path in tqdm(paths, desc=f"decoding {what}", unit="file", leave=False, disable=None):
        finding = inspect_png(Path(path), expect, fix)
        if finding is not None:
            bad.append(finding)
    level = "ok" if not bad else max((f.level for f in bad), key=["warn", "problem"].index)
    summary = Finding(level, f"{what}: {len(paths) - len(bad)}/{len(paths)} files decode as "
                      f"{EXPECTED[expect]}")
    return [summary, *bad]
