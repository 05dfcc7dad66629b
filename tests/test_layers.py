"""The package's import graph is a clean stack: no module imports one above it, and no cycles.

Every ``import`` of a ``segda`` module counts, wherever it stands (module top, inside a
function, under ``TYPE_CHECKING``): a lazy import is still a dependency. The layers are listed
in docs/architecture.md; a new module must be given one here.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "segda"

# Lower numbers sit lower. A module may import modules of its own layer or below; the graph of
# all imports must have no cycle.
LAYERS: dict[str, int] = {
    # ground: no segda imports but each other's
    "labels": 0, "repro": 0, "config": 0, "fastpath": 0, "paper_results": 0, "shipped": 0, "io": 0,
    "train_state": 0, "errors": 0, "checkout": 0, "narrate": 0,
    "losses": 1, "metrics": 1, "optim": 1, "models": 1, "weights": 1,
    # middle: data, the methods and their step, evaluation
    "data": 2, "methods": 2, "step": 2, "rows": 2, "evaluate": 2,
    "adabn": 2, "protocol": 3,
    # upper: the run folder, the fit loop, experiments and results, figures
    "checkpointing": 3, "runs": 4, "trainlog": 5, "train": 5, "results": 5, "viz": 3,
    "starts": 6, "curves": 6,
    "experiments": 7, "decomposition": 7, "shipping": 7, "explorer": 6, "notebook": 7,
    "doctor": 3,
    "ledger": 6, "evaluate_files": 4,
    # top: entry points
    "distributed": 8, "notebooks_runner": 8, "jobs": 8, "cluster": 8,
    "cli": 9, "__main__": 10, "__init__": 10,
}


def _unit(module: str) -> str:
    """``segda.data.loaders`` -> ``data``: sub-packages are one unit."""
    return module.split(".")[1] if module.count(".") else module


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        unit = rel.parts[0]
        found = graph.setdefault(unit, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "segda":
                    names = [f"segda.{a.name}" for a in node.names]
                else:
                    names = [node.module]
            for name in names:
                if name.startswith("segda.") and _unit(name) != unit:
                    found.add(_unit(name))
    return graph


def test_every_module_has_a_layer():
    missing = sorted(set(_imports()) - set(LAYERS))
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


def test_no_module_imports_one_above_it():
    upward = [
        f"{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]})"
        for a, deps in _imports().items() for b in sorted(deps)
        if a in LAYERS and b in LAYERS and LAYERS[b] > LAYERS[a]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_lazy_and_type_checking_imports(tmp_path, monkeypatch):
    """The walk counts imports inside functions and under TYPE_CHECKING (independent check on
    a hand-made package)."""
    pkg = tmp_path / "segda"
    pkg.mkdir()
    (pkg / "labels.py").write_text("def f():\n    from segda import cli\n")
    (pkg / "config.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import segda.methods\n"
    )
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    graph = _imports()
    assert graph == {"labels": {"cli"}, "config": {"methods"}}


def _documented_layers() -> dict[str, int]:
    """``{module: layer}`` from the table of docs/architecture.md ("| 2 | `step` | ...")."""
    doc = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    table = doc.split("## The layers, bottom up")[1].split("\n\n## ")[0]
    found = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            found[cells[1].strip("`").rstrip("/")] = int(cells[0])
    return found


def test_the_architecture_doc_lists_every_module_on_its_layer():
    documented = _documented_layers()
    missing = sorted(set(LAYERS) - set(documented))
    assert not missing, f"docs/architecture.md does not list {missing}"
    extra = sorted(set(documented) - set(LAYERS))
    assert not extra, f"docs/architecture.md lists modules the package lacks: {extra}"
    wrong = {m: (documented[m], LAYERS[m]) for m in LAYERS if documented[m] != LAYERS[m]}
    assert not wrong, f"(doc layer, tests/test_layers.py layer) differ: {wrong}"


def test_the_import_graph_has_at_most_eleven_floors():
    graph = _imports()
    floor: dict[str, int] = {}

    def height(node: str) -> int:
        if node not in floor:
            floor[node] = 1 + max((height(d) for d in graph.get(node, ()) if d in graph), default=0)
        return floor[node]

    floors = max(height(n) for n in graph)
    assert floors <= 11, f"{floors} floors: {sorted(floor.items(), key=lambda kv: -kv[1])[:6]}"
    # the notebooks and the suite stand side by side; the runner needs neither's internals
    assert "experiments" not in graph["notebook"]
    assert "notebook" not in graph["notebooks_runner"]
