"""Executing the teaching notebooks with papermill: the demo sequence and sweeps."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from pathlib import Path

NOTEBOOKS: tuple[str, ...] = (
    "00_domain_gap", "01_source_only", "02_feature_adversarial", "03_output_space_single",
    "04_output_space_multi", "05_minent", "06_advent", "07_ensemble_and_results",
)


def notebooks_dir() -> Path:
    """``notebooks/`` of the source checkout (the package lives in ``lib/segda``)."""
    return Path(__file__).resolve().parents[2] / "notebooks"


def execute(notebook: str | Path, output: str | Path, parameters: dict, cwd: str | Path | None = None):
    """Run one notebook with papermill, injecting ``parameters`` after its parameters cell."""
    import papermill

    notebook = Path(notebook)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    return papermill.execute_notebook(
        str(notebook), str(output), parameters=parameters, kernel_name="python3",
        cwd=str(cwd or notebook.parent), progress_bar=False, log_output=False,
    )


def sweep(
    notebook: str | Path,
    out_root: str | Path,
    presets: Sequence[str],
    seeds: Sequence[int],
    parameters: dict | None = None,
) -> list[Path]:
    """Execute ``notebook`` once per (preset, seed) into ``out_root/<preset>/seed<k>/``.

    Each execution gets its own ``run_dir`` so the runs' metrics can be collected into one
    table afterwards (``python -m segda collect out_root``).
    """
    out_root = Path(out_root).resolve()
    written = []
    for preset in presets:
        for seed in seeds:
            run_dir = out_root / preset.replace("/", "_") / f"seed{seed}"
            params = {**(parameters or {}), "preset": preset, "seed": seed,
                      "run_dir": str(run_dir), "interactive": False}
            out = run_dir / Path(notebook).name
            execute(notebook, out, params)
            written.append(out)
    return written


def export_figures(notebook: str | Path, out_dir: str | Path) -> list[Path]:
    """Write every PNG output of an executed notebook to ``out_dir``.

    Files are named ``<notebook stem>_cell<k>_<j>.png`` (k: the cell's index in the notebook,
    j: the image's index among that cell's outputs), so a figure can be traced to its cell.
    """
    notebook = Path(notebook)
    out_dir = Path(out_dir)
    cells = json.loads(notebook.read_text())["cells"]
    written = []
    for k, cell in enumerate(cells):
        images = [o["data"]["image/png"] for o in cell.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        for j, png in enumerate(images):
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{notebook.stem}_cell{k}_{j}.png"
            # nbformat stores PNGs base64-encoded, sometimes split over several lines.
            data = "".join(png) if isinstance(png, list) else png
            path.write_bytes(base64.b64decode(data))
            written.append(path)
    return written


def demo(out: Path, quick: bool = False) -> int:
    """Execute the whole notebook sequence at demo scale into ``out``; print the results.

    ``out/notebooks``: the executed notebooks; ``out/figures``: their figures as PNG files;
    ``out/runs``: checkpoints and metrics of every run, with results.md / results.csv (the
    table) and runs.csv (one line per run).
    """
    out = out.resolve()
    nb_dir = notebooks_dir()
    run_dir = out / "runs"
    t0 = time.perf_counter()
    params: dict = {"run_dir": str(run_dir), "interactive": False}
    if quick:
        params.update({"pretrain_iters": 40, "max_iters": 20})
    figures = 0
    for name in NOTEBOOKS:
        path = nb_dir / f"{name}.ipynb"
        if not path.exists():
            raise FileNotFoundError(f"notebook missing: {path}")
        t = time.perf_counter()
        executed = out / "notebooks" / path.name
        execute(path, executed, params, cwd=nb_dir)
        figures += len(export_figures(executed, out / "figures"))
        print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
    from segda import results, runs

    collected = runs.collect(run_dir)
    print(results.write_results(run_dir, collected))
    beside = results.format_beside(results.beside_collected(collected))
    (run_dir / "beside_reference.md").write_text(beside + "\n")
    print("\nThis run beside the three-seed reference (lib/segda/reference/embedded_runs.csv):")
    print(beside)
    print(f"{figures} figures in {out / 'figures'}; metrics in {run_dir / 'results.csv'} and "
          f"{run_dir / 'results.md'}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; outputs under {out}")
    return 0
