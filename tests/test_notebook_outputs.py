"""What the committed notebooks show, read from their files (JSON; nothing is executed).

- No output holds a progress bar: a carriage-return redraw or a tqdm bar (``|####| 20/200``)
  committed as text is noise a learner scrolls past.
- Every figure (a base64 PNG under ``image/png``) is at most 1400 px wide, the width a notebook
  page shows without shrinking its text (read from the PNG header).
- Every notebook file is under 1 MB (1,000,000 bytes).
- A markdown cell quotes no number that none of the notebook's outputs prints: prose that
  states what a run measured must read it from an output of the same notebook.

Which numbers of a markdown cell count as quotes, and why the others do not:

- Counted: a number with a decimal point (``0.26``), with a percent sign (``59 %``), or of two
  digits or more (``41``); a sign is dropped (``+16.4`` is ``16.4``). Single digits are left out:
  they count things ("two seeds", "3 panels") far more often than they quote a measurement.
- Equations (``$...$``, ``$$...$$``), inline code and fenced code: they are symbols and
  settings, written as code, not measurements.
- Links' addresses and bare URLs: addresses, not quantities (a link's text is still read).
- Years (1900-2099, as in citations "Tsai et al. 2018" or "ICLR-W 2017") and numbers after
  "arXiv": they date or name a paper.
- Identifiers: numbers written with a leading zero (``03``: the notebooks' numbers), numbers
  after "notebook(s)", "section", "table", "figure", "fig.", "eq.", "equation", "cell", "§",
  and numbers that are part of a name (``ResNet-101``, ``VGG-16``, ``GTA5``, ``DeepLab-v2``:
  glued to a letter or to a letter and a hyphen); a heading's leading section number.
- Durations (a number followed by ``s``, ``min``, ``seconds``, ``minutes``, ``h``...): what a
  run costs on some machine (an exercise's CPU time), not what the run measured; the
  sanitiser of nbval treats timings the same way.
- Numbers that appear in the code cells' source, the parameters cell included: they are the
  run's settings (``max_iters = 200``), which the learner reads in the code.

A quoted number is printed when some number of the notebook's text outputs (streams,
``text/plain``, ``text/html`` with its tags dropped) rounds to it at the quote's decimals; a
quote with a percent sign may read a printed fraction (``0.59`` printed, ``59 %`` quoted), and a
quote without one a printed percent (``59%`` printed, ``0.59`` quoted). A
paper's published number must be printed as well (e.g. from :mod:`segda.paper_results`), so that
the learner sees where it comes from.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from functools import cache
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
MAX_WIDTH_PX = 1400
MAX_BYTES = 1_000_000

# A tqdm bar: "xx%|####      | 20/200" (any fill characters between the bars).
PROGRESS_BAR = re.compile(r"\d+%\|[^|\n]*\|\s*\d+/\d+|\|[#\u2580-\u259f ]{3,}\|\s*\d+/\d+")
TEXT_TYPES = ("text/plain", "text/html", "text/markdown", "text/latex")


@cache
def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _output_texts(cell: dict) -> list[str]:
    """The text of every output of a code cell (streams, text MIME types, errors)."""
    texts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            texts.append(_text(out["text"]))
        for mime in TEXT_TYPES:
            if mime in out.get("data", {}):
                text = _text(out["data"][mime])
                texts.append(re.sub(r"<[^>]+>", " ", text) if mime == "text/html" else text)
        if out.get("output_type") == "error":
            texts.append("\n".join(out.get("traceback", [])))
    return texts


def _png_widths(cell: dict) -> list[int]:
    widths = []
    for out in cell.get("outputs", []):
        png = out.get("data", {}).get("image/png")
        if png:
            head = base64.b64decode(_text(png).replace("\n", "")[:64])
            widths.append(struct.unpack(">I", head[16:20])[0])
    return widths


def progress_bars(nb: dict) -> list[tuple[int, int]]:
    """(cell index, lines that draw a progress bar) of each code cell with one."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        lines = 0
        for text in _output_texts(cell):
            redraws = text.count("\r")
            bars = sum(bool(PROGRESS_BAR.search(line)) for line in text.split("\n"))
            lines += max(redraws, bars)
        if lines:
            found.append((i, lines))
    return found


def wide_figures(nb: dict) -> list[tuple[int, int]]:
    """(cell index, width in pixels) of each figure wider than :data:`MAX_WIDTH_PX`."""
    return [(i, w) for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
            for w in _png_widths(cell) if w > MAX_WIDTH_PX]


# --- numbers quoted in markdown ---------------------------------------------------------------

_NUMBER = re.compile(
    r"(?<![\w.])(?<![A-Za-z]-)"           # not inside a word, a decimal or a name like VGG-16
    r"(\d+(?:\.\d+)?)"
    r"(\s?%)?"
    r"(?![\dA-Za-wyz_]|\.\d)"              # not glued to a name (10x is a quantity)
)
_IDENTIFIER_BEFORE = re.compile(
    r"(?:notebooks?|sections?|tables?|figures?|fig\.|eq\.|equations?|cells?|arxiv:?|§)\s*"
    r"(?:\d+\s*(?:,|-|and|to|or)\s*)*$", re.IGNORECASE)


_DURATION_AFTER = re.compile(r"\s*(?:ms|s|secs?|seconds?|min|mins|minutes?|h|hours?)\b")


def _prose(markdown: str) -> str:
    """A markdown cell without what is not prose: equations, code, addresses, heading numbers."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.DOTALL)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.DOTALL)
    text = re.sub(r"\$[^$\n]+\$", " ", text)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "] ", text)            # a link's address (its text stays)
    text = re.sub(r"<[^>]+>", " ", text)                 # HTML tags and autolinks
    text = re.sub(r"https?://\S+", " ", text)
    return re.sub(r"^(#+\s*)[\d.]+\s", r"\1", text, flags=re.MULTILINE)


def quoted_numbers(markdown: str) -> list[tuple[str, float, int, bool]]:
    """The numbers a markdown cell quotes: (as written, value, decimals, percent)."""
    prose = _prose(markdown)
    found = []
    for m in _NUMBER.finditer(prose):
        digits, percent = m.group(1), bool(m.group(2))
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        if not decimals and not percent and len(digits) < 2:
            continue  # a single digit counts things
        if not decimals and (digits.startswith("0") and len(digits) > 1):
            continue  # an identifier: 03 is notebook 03
        value = float(digits)
        if not decimals and not percent and 1900 <= value <= 2099:
            continue  # a year
        if _IDENTIFIER_BEFORE.search(prose[max(0, m.start() - 40):m.start()]):
            continue  # notebook 03, section 4, table 2, arXiv 1802.10349
        if _DURATION_AFTER.match(prose, m.end()):
            continue  # about 110 s: what a run costs on some machine
        found.append((m.group(0).strip(), value, decimals, percent))
    return found


_ANY_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_PRINTED = re.compile(r"(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(\s?%)?")


class Printed:
    """The numbers of a notebook's outputs, rounded to every number of decimals a quote may
    have: as printed, a printed fraction as a percent, a printed percent as a fraction."""

    def __init__(self, texts) -> None:
        plain, percent = [], []
        for text in texts:
            for number, sign in _PRINTED.findall(text):
                (percent if sign else plain).append(float(number))
        values = plain + percent
        self.as_printed = {d: {round(v, d) for v in values} for d in range(6)}
        self.as_percent = {d: {round(100 * v, d) for v in values} for d in range(6)}
        self.as_fraction = {d: {round(v / 100, d) for v in percent} for d in range(6)}

    def prints(self, value: float, decimals: int, percent: bool) -> bool:
        d = min(decimals, 5)
        v = round(value, d)
        if v in self.as_printed[d]:
            return True
        return v in (self.as_percent[d] if percent else self.as_fraction[d])


def _without_bars(text: str) -> str:
    """An output's text without its progress-bar lines: a bar's counters and rates are no
    reading of the run (and the bars themselves must go, see above)."""
    lines = re.split(r"[\r\n]", text)
    return "\n".join(line for line in lines if not PROGRESS_BAR.search(line))


def unprinted_numbers(nb: dict) -> list[tuple[int, str]]:
    """(cell index, number as written) of each number a markdown cell quotes that no output of
    the notebook prints and no code cell's source holds."""
    printed = Printed(_without_bars(t) for c in nb["cells"] if c["cell_type"] == "code"
                      for t in _output_texts(c))
    source = {float(t) for c in nb["cells"] if c["cell_type"] == "code"
              for t in _ANY_NUMBER.findall(_text(c["source"]))}
    missing = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for written, value, decimals, percent in quoted_numbers(_text(cell["source"])):
            if value in source or printed.prints(value, decimals, percent):
                continue
            missing.append((i, written))
    return missing


def _ids(paths):
    return [p.name for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_no_output_holds_a_progress_bar(path):
    found = progress_bars(_load(path))
    assert not found, f"{path.name}: progress bars in (cell, lines): {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_every_figure_is_at_most_1400_pixels_wide(path):
    found = wide_figures(_load(path))
    assert not found, f"{path.name}: figures wider than {MAX_WIDTH_PX} px (cell, px): {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_every_notebook_is_under_1_mb(path):
    size = path.stat().st_size
    assert size < MAX_BYTES, f"{path.name}: {size:,} bytes (at most {MAX_BYTES:,})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_markdown_quotes_only_numbers_the_outputs_print(path):
    found = unprinted_numbers(_load(path))
    assert not found, (f"{path.name}: markdown quotes numbers no output prints "
                       f"(cell, number): {found}")


def test_the_number_rules_on_examples():
    text = ("AdvEnt gains +10.4 (about seven times the papers' +1.5) with 59 % of cells; see "
            "notebook 03, Tsai et al. 2018, ResNet-101 and VGG-16, `lambda = 0.001`, "
            "$\\lambda_{adv} = 0.001$, [the docs](https://x.org/a/0.87) and two seeds at 10x "
            "in about 110 s.")
    assert [w for w, *_ in quoted_numbers(text)] == ["10.4", "1.5", "59 %", "10"]
    nb = {"cells": [
        {"cell_type": "code", "source": "max_iters = 200\n", "outputs": [
            {"output_type": "stream", "name": "stdout", "text": "gain 10.43, share 0.592\n"}]},
        {"cell_type": "markdown", "source": "200 steps: +10.4, 59 % and 1.5, 41.3, 0.10, 5.92"},
    ]}
    # 0.10: no printed percent reads as it (10.43 has no % sign); 5.92 is no reading of 0.592
    assert unprinted_numbers(nb) == [(1, "1.5"), (1, "41.3"), (1, "0.10"), (1, "5.92")]
    bar = {"cells": [{"cell_type": "code", "source": "", "outputs": [
        {"output_type": "stream", "name": "stderr",
         "text": "train:  10%|#         | 20/200 [00:01<00:10]\rtrain: 20%|##  | 40/200\n"}]}]}
    assert progress_bars(bar) == [(0, 1)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_a_notebook_names_the_kernel_as_the_installed_one_does(path):
    """A committed notebook whose kernel display name differs from the installed kernel's opens
    as modified in JupyterLab (it rewrites the metadata on open)."""
    from jupyter_client.kernelspec import KernelSpecManager

    installed = KernelSpecManager().get_kernel_spec("python3")
    spec = _load(path)["metadata"]["kernelspec"]
    assert (spec["name"], spec["display_name"]) == ("python3", installed.display_name)
