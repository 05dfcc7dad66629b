"""Executing the teaching notebooks with papermill: the demo sequence and sweeps."""

from __future__ import annotations

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


def demo(out: Path, quick: bool = False) -> int:
    """Execute the whole notebook sequence at demo scale into ``out``; print the results."""
    out = out.resolve()
    nb_dir = notebooks_dir()
    run_dir = out / "runs"
    t0 = time.perf_counter()
    params: dict = {"run_dir": str(run_dir), "interactive": False}
    if quick:
        params.update({"pretrain_iters": 40, "max_iters": 20})
    for name in NOTEBOOKS:
        path = nb_dir / f"{name}.ipynb"
        if not path.exists():
            raise FileNotFoundError(f"notebook missing: {path}")
        t = time.perf_counter()
        execute(path, out / "notebooks" / path.name, params, cwd=nb_dir)
        print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
    results = run_dir / "results.md"
    if results.exists():
        print(results.read_text())
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; outputs under {out}")
    return 0
