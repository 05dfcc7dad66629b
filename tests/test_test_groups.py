"""make test's workers (pytest-xdist, conftest.py's groups) keep what must stay together:

* every module whose tests use a session fixture of conftest.py that another module uses too is
  in the shared group, so that the fixture is built once and its runs are the ones compared;
* the notebooks are two groups of consecutive notebooks, each in order, and the long
  groups come first;
* the Makefile's test target schedules by those groups, in that order.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import conftest
from test_readme import makefile_recipe

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SESSION_FIXTURES = ("workspace", "readme_sweep")


def _fixtures_used(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    return {a.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
            for a in node.args.args if a.arg in SESSION_FIXTURES}


def test_the_modules_sharing_session_fixtures_are_one_group():
    users = {p.name for p in TESTS.glob("test_*.py") if _fixtures_used(p)}
    assert users, "no module uses the shared session fixtures"
    assert users <= conftest.SHARED_FIXTURE_MODULES, (
        f"{sorted(users - conftest.SHARED_FIXTURE_MODULES)} use {SESSION_FIXTURES} but are not in "
        "conftest.SHARED_FIXTURE_MODULES: under make test they would build the fixture again")


def test_notebooks_stay_in_order_in_two_groups_and_the_long_groups_go_first():
    paths = ["tests/test_adabn.py", "notebooks/00_domain_gap.ipynb", "tests/test_cluster.py",
             "notebooks/01_source_only.ipynb", "tests/test_reproduce.py", "tests/test_config.py",
             "notebooks/05_minent.ipynb", "notebooks/07_ensemble_and_results.ipynb"]
    items = [SimpleNamespace(path=REPO / p, marks=[]) for p in paths]
    for item in items:
        item.add_marker = item.marks.append
    conftest.pytest_collection_modifyitems(None, items)
    order = [i.path.relative_to(REPO).as_posix() for i in items]
    groups = [i.marks[0].args[0] for i in items]
    # the long groups first, in LONG_GROUPS order; within a group the items keep their order
    long_items = [(g, o) for g, o in zip(groups, order) if g in conftest.LONG_GROUPS]
    assert [g for g, _ in long_items] == sorted((g for g, _ in long_items),
                                                key=conftest.LONG_GROUPS.index)
    assert groups[len(long_items):] == ["test_adabn", "test_config"]
    assert [o for g, o in long_items if g == "end_to_end"] == [
        "tests/test_cluster.py", "tests/test_reproduce.py"]
    # the notebooks: consecutive ones in two groups, each group in notebook order
    notebooks = [(g, o) for g, o in long_items if o.endswith(".ipynb")]
    assert [o for _, o in notebooks] == sorted(o for _, o in notebooks)
    firsts = {g: o for g, o in reversed(notebooks)}
    assert set(firsts) == {"notebooks", "notebooks_late"}
    assert all((o[10:12] >= conftest.SECOND_NOTEBOOK_GROUP_FROM) == (g == "notebooks_late")
               for g, o in notebooks)


def test_the_makefile_schedules_by_group_in_item_order():
    words = makefile_recipe("test")
    assert {"--dist", "loadgroup", "--no-loadscope-reorder", "-n"} <= set(words)
    assert "OMP_NUM_THREADS=1" in words  # one thread per worker: the workers share two cores
