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
# Finished runs that ship whole (a folder of run files under shipped_weights/), by the preset
# they are a run of: a notebook whose row has exactly the shipped run's config copies it instead
# of training it (segda.starts.install_shipped_run). The oracle trains 500 iterations from
# scratch, the longest row of notebook 01 and 07.
SHIPPED_RUNS = {"embedded/oracle": "embedded_oracle"}
# The files of a shipped run, in the order they are copied: metrics.json, which marks a run
# as finished (segda.runs.is_complete), last.
RUN_FILES = ("last.pth", "history.csv", "config.yaml", "metrics.json")


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


def run_files(name: str, manifest: Path = MANIFEST) -> dict[str, Path]:
    """The verified files of the shipped run ``name`` (``{file name: path}``, in
    :data:`RUN_FILES` order): each exists and has the manifest's SHA-256; otherwise
    :class:`ShippedWeightsError` naming the file and the command that makes the run again."""
    record = entry(name, manifest)
    folder = manifest.parent / record["folder"]
    remake = (f"make it again with `{record['command']}` (or restore it: "
              f"git checkout -- {folder})")
    out = {}
    for file in RUN_FILES:
        path = folder / file
        if not path.is_file():
            raise ShippedWeightsError(f"shipped run {name!r}: {path} is missing; {remake}")
        found = io.sha256(path)
        if found != record["sha256"][file]:
            raise ShippedWeightsError(
                f"{path} is not the shipped run {name!r}'s: SHA-256 {found}, the manifest "
                f"({manifest}) says {record['sha256'][file]}; {remake}")
        out[file] = path
    return out
