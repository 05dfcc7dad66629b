"""The source checkout around the package: the folders beside ``lib/segda`` that the library
reads when it runs from a clone (the package itself needs none of them)."""

from __future__ import annotations

from pathlib import Path

# notebooks/ of the source checkout (the package lives in lib/segda): JupyterLab starts a
# notebook's kernel there, and the notebook runner executes the sequence from it.
NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
