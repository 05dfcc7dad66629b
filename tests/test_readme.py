"""The README stays a guide and the documentation's links hold.

* ``README.md`` is at most :data:`MAX_README_LINES` lines; the long material lives in ``docs/``.
* Every relative link of ``README.md`` and ``docs/*.md`` names a file or folder that exists.
* The file that ``make suite`` writes the results table into (the ``--readme`` of the Makefile's
  ``suite`` target) holds each results block's begin and end markers exactly once, so the
  table has one home; ``README.md`` holds none.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from segda import results

REPO = Path(__file__).resolve().parents[1]
MAX_README_LINES = 250
# The results blocks the suite and the schedule-length study write (--readme-block NAME).
RESULTS_BLOCKS = ("embedded", "embedded-400it")

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target) outside code; the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_links(path: Path) -> list[str]:
    """The link targets of a Markdown file that point into the repository (no URL, no anchor-only)."""
    targets = LINK.findall(_prose(path.read_text()))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def makefile_recipe(target: str) -> list[str]:
    """The words of the Makefile's recipe for ``target`` (its tab-indented lines)."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, f"the Makefile has no {target!r} target"
    return shlex.split(recipe.group(1))


def suite_readme() -> Path:
    """The path the Makefile's ``suite`` target passes as ``--readme``."""
    words = makefile_recipe("suite")
    assert "--readme" in words, "the Makefile's suite target passes no --readme"
    return REPO / words[words.index("--readme") + 1]


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines, more than {MAX_README_LINES}: move the detail to a "
        "page under docs/ and link it")


def test_link_pattern_finds_relative_links_only(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](docs/x.md#sec) [b](https://example.org) [c](#local) `[d](no.md)`\n"
                    "```\n[e](code.md)\n```\n[f](../g.md)\n")
    assert relative_links(page) == ["docs/x.md#sec", "../g.md"]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not broken, f"{page.relative_to(REPO)} links to files that do not exist: {broken}"


def test_suite_writes_into_the_one_file_that_holds_the_results_markers():
    target = suite_readme()
    assert target.exists(), f"the Makefile's suite target writes into {target}, which does not exist"
    text = target.read_text()
    for name in RESULTS_BLOCKS:
        for marker in (results.README_BEGIN.format(name=name), results.README_END.format(name=name)):
            assert text.count(marker) == 1, f"{target.relative_to(REPO)} holds {marker!r} " \
                f"{text.count(marker)} times, not once"
    for page in DOCS:
        if page != target:
            # a marker is a line of its own (a page may quote one inside a sentence)
            lines = page.read_text().splitlines()
            assert not any(line.startswith("<!-- segda:results ") for line in lines), (
                f"{page.relative_to(REPO)} holds a results block; its one home is "
                f"{target.relative_to(REPO)}")
