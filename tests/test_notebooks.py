"""Every notebook runs through papermill with injected parameters (tiny sizes).

This proves each notebook's ``parameters`` cell works: papermill inserts an
``injected-parameters`` cell after it and the whole notebook executes top to bottom. The
committed outputs are checked separately by nbval (``make test``).
"""

import json
from pathlib import Path

import pytest

from segda import notebooks_runner

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
TINY = {
    "image_size": [64, 32], "batch_size": 2, "pretrain_iters": 4, "max_iters": 2,
    "eval_images": 4, "device": "cpu", "seed": 3, "interactive": False,
}


def test_every_notebook_has_one_literal_parameters_cell():
    import ast

    for name in notebooks_runner.NOTEBOOKS:
        nb = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, name
        tree = ast.parse("".join(tagged[0]["source"]))
        for stmt in tree.body:
            assert isinstance(stmt, ast.Assign), f"{name}: parameters cell must only assign"
            ast.literal_eval(stmt.value)  # literals only: papermill does not recompute
        names = {t.id for s in tree.body for t in s.targets}
        assert {"dataset", "data_root", "model", "preset", "max_iters", "batch_size",
                "image_size", "device", "seed", "amp", "run_dir", "interactive"} <= names


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nb_runs")


@pytest.mark.parametrize("name", notebooks_runner.NOTEBOOKS)
def test_notebook_executes_with_injected_parameters(name, run_dir, tmp_path):
    out = tmp_path / f"{name}.ipynb"
    params = {**TINY, "run_dir": str(run_dir)}
    notebooks_runner.execute(NOTEBOOK_DIR / f"{name}.ipynb", out, params, cwd=NOTEBOOK_DIR)
    nb = json.loads(out.read_text())
    injected = [c for c in nb["cells"]
                if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(injected) == 1 and "max_iters = 2" in "".join(injected[0]["source"])
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_missing_dataset_stops_in_the_first_cells(tmp_path):
    import papermill

    out = tmp_path / "01.ipynb"
    params = {**TINY, "dataset": "gta5_cityscapes", "preset": "paper/source_only",
              "data_root": str(tmp_path / "no_data"), "run_dir": str(tmp_path / "runs")}
    with pytest.raises(papermill.PapermillExecutionError) as err:
        notebooks_runner.execute(NOTEBOOK_DIR / "01_source_only.ipynb", out, params, cwd=NOTEBOOK_DIR)
    message = str(err.value)
    assert "no_data/GTA5" in message and "data_scripts/prepare_gta5.py" in message
    nb = json.loads(out.read_text())
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    failed = [i for i, c in enumerate(code_cells)
              if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    # code cells: parameters, injected parameters, imports, then the setup cell that fails
    assert failed == [3]


def test_export_figures_writes_each_png_output_named_by_cell(tmp_path):
    import base64

    first, second = b"\x89PNG\r\n\x1a\n" + bytes(range(200)), b"\x89PNG\r\n\x1a\n" + b"second"
    encoded = base64.encodebytes(first).decode()  # 76-character lines, as Jupyter may store them
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["# title"]},
        {"cell_type": "code", "outputs": [{"output_type": "stream", "text": ["hello"]}]},
        {"cell_type": "code", "outputs": [
            {"output_type": "display_data", "data": {"image/png": encoded.splitlines(keepends=True)}},
            {"output_type": "execute_result", "data": {"text/plain": ["<Figure>"],
                                                       "image/png": base64.b64encode(second).decode()}},
        ]},
    ]}
    path = tmp_path / "07_demo.ipynb"
    path.write_text(json.dumps(nb))
    written = notebooks_runner.export_figures(path, tmp_path / "figures")
    assert [p.name for p in written] == ["07_demo_cell2_0.png", "07_demo_cell2_1.png"]
    assert written[0].read_bytes() == first and written[1].read_bytes() == second


def test_sweep_command_executes_per_preset_and_seed_and_collects(tmp_path):
    from segda import cli

    params = [f"{k}={json.dumps(v)}" for k, v in TINY.items() if k not in ("seed", "interactive")]
    argv = ["sweep", "--notebook", str(NOTEBOOK_DIR / "01_source_only.ipynb"), "--out", str(tmp_path),
            "--presets", "embedded/source_only", "--seeds", "3", "4"]
    for p in params:
        argv += ["-p", p]
    assert cli.main(argv) == 0
    for seed in (3, 4):
        assert (tmp_path / "embedded_source_only" / f"seed{seed}" / "01_source_only.ipynb").exists()
    per_run = (tmp_path / "runs.csv").read_text()
    assert per_run.count("source_only") >= 2 and "oracle" in per_run
    assert "| source-only (control) |" in (tmp_path / "results.md").read_text()


def test_siblings_at_paper_scale_are_existing_presets_keyed_by_their_row():
    from segda import config, notebook, rows

    presets = set(config.list_presets())
    keys = ["source_only", "source_only_tgt_bn", "feature_adv", "output_adv_single",
            "output_adv_multi", "minent", "minent_cp", "advent", "oracle"]
    for row in keys:
        assert notebook.sibling("embedded/advent", row) == f"embedded/{row}"
        paper = notebook.sibling("paper/advent", row)
        assert paper in presets, paper
        assert notebook.row_key(paper) == row == notebook.row_key(f"embedded/{row}")
        assert rows.find(paper.split("/")[1]).key == row  # results tables name the paper runs
    assert notebook.sibling("paper/advent", "output_adv_single") == "paper/adaptsegnet_single"
    assert notebook.row_key("paper/adaptsegnet_vgg_single") == "adaptsegnet_vgg_single"
