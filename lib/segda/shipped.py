"""Weights that ship inside the package, verified by SHA-256 every time they are loaded.

A config names them as ``model.init_checkpoint: "shipped:<name>"`` (so configs stay the same
wherever the repository lives); :func:`resolve` turns the name into the file's path after
checking its digest against ``shipped_weights/manifest.json``. The manifest also records the
command that made the file and what it scores, and the losses of its first training
iterations, which a test regenerates (:func:`segda.shipping.first_losses`).
"""

from __future__ import annotations

import json
from pathlib import Path

from segda import io
from segda.errors import UserError

SCHEME = "shipped:"
FOLDER = Path(__file__).parent / "shipped_weights"
MANIFEST = FOLDER / "manifest.json"
# The source-only checkpoint every embedded adaptation run starts from by default.
EMBEDDED_PRETRAINED = "embedded_source_pretrain"


class ShippedWeightsError(RuntimeError, UserError):
    """A shipped weights file that is unknown, missing or not the one the manifest names."""


def is_shipped(ref: str | Path) -> bool:
    """Whether an ``init_checkpoint`` value names shipped weights (``"shipped:<name>"``)."""
    return str(ref).startswith(SCHEME)


def reference(name: str = EMBEDDED_PRETRAINED) -> str:
    """The ``init_checkpoint`` value that names shipped weights."""
    return SCHEME + name


def read_manifest(path: Path = MANIFEST) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def entry(name: str, path: Path = MANIFEST) -> dict:
    """The manifest's record of ``name``: file, sha256, command, scores, first losses."""
    known = read_manifest(path)
    if name not in known:
        raise ShippedWeightsError(
            f"no shipped weights named {name!r} in {path}; known: {sorted(known) or 'none'}")
    return known[name]


def resolve(ref: str | Path, manifest: Path = MANIFEST) -> Path:
    """The verified path of ``"shipped:<name>"``: the file exists and its SHA-256 is the
    manifest's; otherwise :class:`ShippedWeightsError` naming the file, both digests and the
    command that regenerates it."""
    name = str(ref).removeprefix(SCHEME)
    record = entry(name, manifest)
    path = manifest.parent / record["file"]
    remake = f"regenerate it with `{record['command']}` (or restore it: git checkout -- {path.name})"
    if not path.is_file():
        raise ShippedWeightsError(f"shipped weights {name!r} missing: {path}; {remake}")
    found = io.sha256(path)
    if found != record["sha256"]:
        raise ShippedWeightsError(
            f"{path} is not the shipped {name!r}: SHA-256 {found}, the manifest "
            f"({manifest}) says {record['sha256']}; {remake}")
    return path
