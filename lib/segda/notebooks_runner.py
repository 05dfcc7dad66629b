"""Executing the teaching notebooks with papermill: the demo sequence and sweeps."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from segda import checkout

NOTEBOOKS: tuple[str, ...] = (
    "00_domain_gap", "01_source_only", "02_feature_adversarial", "03_output_space_single",
    "04_output_space_multi", "05_minent", "06_advent", "07_ensemble_and_results",
)
# The sequence as two groups of consecutive notebooks that run side by side, one process each
# (make demo on a machine with two cores or more, and make test's two notebook groups): each
# group runs its notebooks in order, and the two share their runs (a row one group is training
# the other trains around, then reuses: segda.notebook.train_rows). The split balances the two
# groups' training at the defaults: 00-04 train the control, the training-mode BN row and three
# methods; 05-07 the other four rows and read the rest.
NOTEBOOK_GROUPS: tuple[tuple[str, ...], ...] = (NOTEBOOKS[:5], NOTEBOOKS[5:])


# What jupyter_client says when a kernel exits before it answers: two kernels started at the same
# moment (make demo's two groups, parallel jobs) can be handed the same free TCP port, and the
# loser exits. No cell has run then, so starting the notebook again is safe.
KERNEL_DIED_AT_START = "Kernel died before replying to kernel_info"
KERNEL_START_TRIES = 3


def execute(notebook: str | Path, output: str | Path, parameters: dict, cwd: str | Path | None = None):
    """Run one notebook with papermill, injecting ``parameters`` after its parameters cell (a
    kernel that dies before its first answer is started again, up to
    :data:`KERNEL_START_TRIES` times)."""
    import papermill

    notebook = Path(notebook)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, KERNEL_START_TRIES + 1):
        try:
            return papermill.execute_notebook(
                str(notebook), str(output), parameters=parameters, kernel_name="python3",
                cwd=str(cwd or notebook.parent), progress_bar=False, log_output=False,
            )
        except RuntimeError as err:
            if KERNEL_DIED_AT_START not in str(err) or attempt == KERNEL_START_TRIES:
                raise


class SweepError(ValueError):
    """A sweep that cannot start: one line per preset that cannot run, naming the fix."""


@dataclass(frozen=True)
class SweepJob:
    """One (preset, seed) execution of a notebook: what a serial loop, a local process or a
    SLURM array task runs (:func:`run_job`). Plain paths and values, so it pickles."""

    notebook: str
    preset: str
    seed: int
    run_dir: str
    parameters: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.preset.replace('/', '_')}/seed{self.seed}"

    @property
    def output(self) -> Path:
        """The executed notebook, beside the runs it trained."""
        return Path(self.run_dir) / Path(self.notebook).name


def _notebook_code(notebook: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(notebook.read_text())["cells"]
            if c["cell_type"] == "code"]


def notebook_rows(notebook: str | Path) -> tuple[str, tuple[str, ...]]:
    """The preset a notebook is written for (its parameters cell's ``preset``) and the rows it
    trains beside it (its ``names = [...]`` list), read from the notebook's source."""
    import ast

    default, names = None, ()
    for source in _notebook_code(Path(notebook)):
        try:
            tree = ast.parse(source)
        except SyntaxError:  # IPython magics: no assignments the check needs
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name):
                target = node.targets[0].id
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:  # a computed value: not the literal the check reads
                    continue
                if target == "preset" and default is None:
                    default = value
                elif target == "names":
                    names = tuple(value)
    if default is None:
        raise SweepError(f"{notebook} has no 'preset' parameter: it cannot be swept over presets")
    return default, names


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """``--seeds`` as a sweep runs them: each once (a repeated seed would be a second job on
    the same run folder, refused as in use), each at least 0 (checked before any job)."""
    from segda import config

    bad = [s for s in seeds if s < 0]
    if bad:
        raise config.ConfigError(f"--seeds {' '.join(map(str, seeds))}: a seed is at least 0, "
                                 f"got {bad[0]}")
    return list(dict.fromkeys(seeds))


def notebook_parameters(notebook: str | Path) -> list[str]:
    """The names its parameters cell (the cell tagged ``parameters``) assigns."""
    import ast

    cells = json.loads(Path(notebook).read_text())["cells"]
    names: list[str] = []
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            names += [t.id for node in ast.parse("".join(cell["source"])).body
                      if isinstance(node, ast.Assign) for t in node.targets
                      if isinstance(t, ast.Name)]
    return names


def check_parameters(notebook: str | Path, parameters: dict) -> None:
    """Refuse a ``-p`` name the notebook's parameters cell lacks (papermill would only warn,
    and the notebook would run with its own value), naming the closest one."""
    import difflib

    known = notebook_parameters(notebook)
    for name in parameters:
        if name in known or name in ("preset", "seed", "run_dir", "interactive"):
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise SweepError(f"-p {name}: {Path(notebook).name} has no parameter {name!r}; {hint}"
                         f"its parameters are {', '.join(known)}")


def why_not_runnable(notebook: str | Path, preset: str) -> str | None:
    """Why ``notebook`` cannot execute ``preset`` (``None``: it can).

    A method notebook writes out its own method's update and reads its rows by name, so it runs
    the presets of its own method (``06_advent`` with ``embedded/advent`` or
    ``paper/advent``), not a row it trains itself beside its preset (``embedded/minent_cp`` in
    ``05_minent``).
    """
    from segda import config, methods, rows

    default, names = notebook_rows(notebook)
    cfg = config.load(preset)  # an unknown preset or a bad value: ConfigError naming it
    method = methods.get(cfg.method.name)
    own = methods.get(config.load(default).method.name)
    name = Path(notebook).name
    if method.name != own.name:
        extra = "" if method.disc_input is not None or own.disc_input is None else \
            f"; method '{method.name}' has no discriminator"
        return f"{name} writes out and plots the '{own.name}' update, {preset} trains '{method.name}'{extra}"
    row = rows.key_of_preset(preset)
    if row in names and row != rows.key_of_preset(default):
        return f"{name} trains {row} itself, beside its own preset {default}"
    return None


def notebook_for(preset: str, candidates: Sequence[str | Path] | None = None) -> Path | None:
    """The first notebook of the sequence that can execute ``preset``."""
    paths = candidates or [checkout.NOTEBOOKS_DIR / f"{n}.ipynb" for n in NOTEBOOKS]
    for path in paths:
        path = Path(path)
        try:
            if path.exists() and why_not_runnable(path, preset) is None:
                return path
        except SweepError:
            continue
    return None


def plan_sweep(
    notebook: str | Path,
    out_root: str | Path,
    presets: Sequence[str],
    seeds: Sequence[int],
    parameters: dict | None = None,
) -> tuple[list[SweepJob], list[str]]:
    """Every (preset, seed) job of a sweep, checked before anything runs, and the notes to print.

    A preset that ``notebook`` cannot execute runs in the notebook of the sequence that can
    (one note says so); a preset that no notebook can execute stops the sweep here with one
    line per such preset (:class:`SweepError`), before any training.
    """
    from segda import config

    notebook = Path(notebook).resolve()
    if not notebook.exists():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    seeds = check_seeds(seeds)
    check_parameters(notebook, parameters or {})
    out_root = Path(out_root).resolve()
    chosen, notes, errors = {}, [], []
    for preset in dict.fromkeys(presets):
        try:
            reason = why_not_runnable(notebook, preset)
        except config.ConfigError as err:
            errors.append(f"{preset}: {err}")
            continue
        if reason is None:
            chosen[preset] = notebook
            continue
        other = notebook_for(preset)
        if other is None:
            errors.append(f"{preset} cannot run in {notebook.name} ({reason}) nor in any other notebook; "
                          f"train it with: python -m segda train {preset} --run-dir DIR")
        else:
            chosen[preset] = other
            notes.append(f"{preset} runs in {other.name}: {reason}")
    if errors:
        raise SweepError("\n".join(errors))
    jobs = [SweepJob(str(chosen[p]), p, seed, str(out_root / p.replace("/", "_") / f"seed{seed}"),
                     dict(parameters or {}))
            for p in chosen for seed in seeds]
    return jobs, notes


def run_job(job: SweepJob) -> Path:
    """Execute one sweep job's notebook into its run folder (runs found there are reused,
    unfinished ones resumed from their ``last.pth``)."""
    params = {**job.parameters, "preset": job.preset, "seed": job.seed, "run_dir": job.run_dir,
              "interactive": False}
    execute(job.notebook, job.output, params)
    return job.output


def failure_line(job: SweepJob, err: BaseException) -> str:
    """One line for a failed job: the error (a notebook's: the failing cell's exception) and the
    executed notebook, which holds the whole traceback."""
    what = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
    return f"{job.name} failed: {what.splitlines()[0] if what else ''} (see {job.output})"


def sweep(
    notebook: str | Path,
    out_root: str | Path,
    presets: Sequence[str],
    seeds: Sequence[int],
    parameters: dict | None = None,
    jobs: Sequence[SweepJob] | None = None,
) -> tuple[list[Path], list[str]]:
    """Execute ``notebook`` once per (preset, seed) into ``out_root/<preset>/seed<k>/``, one after
    another; return the executed notebooks and one line per failed job.

    Each execution gets its own ``run_dir`` so the runs' metrics can be collected into one
    table afterwards (``python -m segda collect out_root``); a failed job is reported and the
    others still run.
    """
    if jobs is None:
        jobs, notes = plan_sweep(notebook, out_root, presets, seeds, parameters)
        for note in notes:
            print(note, flush=True)
    written, failures = [], []
    for job in jobs:
        try:
            written.append(run_job(job))
        except Exception as err:  # noqa: BLE001 - one job's failure must not stop the others
            failures.append(failure_line(job, err))
            print(failures[-1], flush=True)
    return written, failures


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


def demo_plan(cpus: int) -> tuple[tuple[tuple[str, ...], ...], int]:
    """How ``make demo`` runs the sequence on ``cpus`` cores: the two groups of
    :data:`NOTEBOOK_GROUPS` side by side with ``cpus // 2`` threads per kernel, or on a single
    core the eight notebooks in order with one thread."""
    if cpus < 2:
        return (NOTEBOOKS,), 1
    return NOTEBOOK_GROUPS, cpus // len(NOTEBOOK_GROUPS)


def demo(out: str | Path, quick: bool = False) -> int:
    """Execute the whole notebook sequence at demo scale into ``out``; print the results.

    ``out/notebooks``: the executed notebooks; ``out/figures``: their figures as PNG files;
    ``out/runs``: checkpoints and metrics of every run, with results.md / results.csv (the
    table) and runs.csv (one line per run).
    """
    import os

    from segda import runs

    out = runs.check_run_dir(out, "--out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):  # before the first notebook runs (a read-only mount too)
        raise PermissionError(f"{out} is not writable: give --out a folder you can write")
    nb_dir = checkout.NOTEBOOKS_DIR
    for name in NOTEBOOKS:
        if not (nb_dir / f"{name}.ipynb").exists():
            raise FileNotFoundError(f"notebook missing: {nb_dir / f'{name}.ipynb'}")
    run_dir = out / "runs"
    t0 = time.perf_counter()
    params: dict = {"run_dir": str(run_dir), "interactive": False}
    if quick:
        params.update({"pretrain_iters": 40, "max_iters": 20})
    groups, threads = demo_plan(os.cpu_count() or 1)
    print(f"{len(groups)} group(s) of notebooks side by side, {threads} thread(s) per kernel: "
          + " | ".join(" ".join(n[:2] for n in g) for g in groups), flush=True)

    def run_group(names: Sequence[str]) -> int:
        figures = 0
        for name in names:
            t = time.perf_counter()
            executed = out / "notebooks" / f"{name}.ipynb"
            execute(nb_dir / f"{name}.ipynb", executed, params, cwd=nb_dir)
            figures += len(export_figures(executed, out / "figures"))
            print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
        return figures

    # The kernels inherit the thread count: one core per group (set before the groups start,
    # restored after).
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        with ThreadPoolExecutor(len(groups)) as pool:
            figures = sum(f.result() for f in [pool.submit(run_group, g) for g in groups])
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    from segda import results, runs

    # notebook 07 wrote the statistics rows of the notebooks' runs (segda.decomposition)
    collected = runs.collect(run_dir)
    print(results.write_results(run_dir, collected))
    split = results.format_decomposition_beside(collected)
    (run_dir / "decomposition.md").write_text(split + "\n")
    print("\nWhat batch-norm statistics give and what each loss adds, this run beside the reference:")
    print(split)
    beside = results.format_beside(results.beside_collected(collected))
    (run_dir / "beside_reference.md").write_text(beside + "\n")
    print("\nThis run beside the three-seed reference (lib/segda/reference/embedded_runs.csv):")
    print(beside)
    print(f"{figures} figures in {out / 'figures'}; metrics in {run_dir / 'results.csv'} and "
          f"{run_dir / 'results.md'}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; outputs under {out}")
    return 0
