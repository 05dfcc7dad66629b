"""Run folders: the module that names, writes and reads a run's files (the checkpoints'
format and save are :mod:`segda.checkpointing`'s), and tables over many runs.

A run folder holds:

* ``config.yaml``: the run's configuration (written when the run starts);
* ``last.pth`` (and ``iter_XXXXXX.pth`` snapshots): checkpoints in the format of
  :mod:`segda.checkpointing`, which writes them (:func:`checkpoint_files` names them);
* ``history.csv`` and ``metrics.json``: the loss history and the evaluations (written when the
  run ends); an ensemble's folder holds only ``metrics.json``;
* ``tensorboard/``: the loss and mIoU curves, when ``run.tensorboard`` is on
  (:func:`tensorboard_writer`);
* ``.lock``: the lock a training process holds on the folder (:func:`lock`).

Beside a run's own files, ``python -m segda eval`` writes its tables (``eval_*.csv`` and ``.md``)
next to the checkpoint it evaluates, unless ``--out`` names another folder.

Every file is written atomically (:func:`segda.io.write_atomic`); :func:`prepare` deletes the
temporaries that killed writes left. :func:`check_config` is the one check that a folder holds no
run of another configuration; the library, the command line and data-parallel runs all use it.
A result is bound to the run that produced it: ``metrics.json`` records the config's hash
(:func:`config_hash`) and the final iteration, and :func:`is_complete` and :func:`collect`
check them against ``config.yaml`` (and ``train.ensure_run`` against ``last.pth``); a retrain
deletes the results before it writes the new config (:func:`clear_results`). Reading a damaged
file raises :class:`RunFileError`, which names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segda import checkpointing, io, repro
from segda import config as config_mod
from segda.config import TrainConfig
from segda.errors import UserError

if TYPE_CHECKING:
    from segda.train_state import TrainState

CONFIG = "config.yaml"
METRICS = "metrics.json"
HISTORY = "history.csv"
CHECKPOINT = "last.pth"
SNAPSHOTS = "iter_*.pth"  # the kept snapshots, one per checkpoint_every (run.keep_snapshots)
TENSORBOARD = "tensorboard"
LOCK = ".lock"
# the tables `python -m segda eval` writes beside a checkpoint (segda.evaluate.tables_stem)
EVAL_TABLES = ("eval_*.md", "eval_*.csv")


class RunFileError(ValueError, UserError):
    """A run folder's file is damaged; the message names it and says what to do."""


class RunLockedError(RuntimeError, UserError):
    """Another process is training into the run folder."""


class ConfigMismatchError(ValueError, UserError):
    """The run folder holds a run of another configuration."""


def config_hash(cfg: TrainConfig) -> str:
    """A short stable digest of a configuration: the first 8 hex digits of the SHA-256 of its
    canonical YAML (``cfg.to_yaml()``). Equal configs hash equally, across processes and
    machines."""
    return io.sha256_bytes(cfg.to_yaml().encode())[:8]


def _config_file_hash(run_dir: Path) -> str | None:
    """The hash of the ``config.yaml`` a run folder holds, as written: equal to the
    :func:`config_hash` recorded in its ``metrics.json`` when both come from one run (even
    after a later segda adds config fields, which changes ``config_hash`` of the re-read
    config)."""
    path = run_dir / CONFIG
    return io.sha256(path)[:8] if path.exists() else None


def write_config(run_dir: str | Path, cfg: TrainConfig) -> None:
    io.write_text_atomic(Path(run_dir) / CONFIG, cfg.to_yaml())


def prepare(run_dir: str | Path, cfg: TrainConfig, *, resume: bool, writes: bool = True) -> None:
    """Make ``run_dir`` ready to train ``cfg`` into, under its lock (:func:`lock`): delete the
    temporaries killed writes left, then check that a resumed folder holds no run of another
    config (:func:`check_config`), or delete a retrained folder's results
    (:func:`clear_results`). ``writes=False`` (a rank of a data-parallel run other than rank 0)
    only checks."""
    run_dir = Path(run_dir)
    if writes and run_dir.is_dir():
        io.remove_temporaries(run_dir)  # no other process writes here: the caller holds the lock
    if resume:
        check_config(run_dir, cfg)
    elif writes:
        clear_results(run_dir)  # a retrain: no result of the old run may survive it


def snapshot_name(iteration: int) -> str:
    """The file name of the snapshot kept after ``iteration`` updates: ``iter_XXXXXX.pth``."""
    return f"iter_{iteration:06d}.pth"


def checkpoint_files(run_dir: str | Path, iteration: int, snapshot: bool = False) -> list[Path]:
    """The files a checkpoint after ``iteration`` updates goes to
    (:func:`segda.checkpointing.save`): ``last.pth``, and the snapshot of that iteration too
    when ``snapshot``."""
    run_dir = Path(run_dir)
    return [run_dir / CHECKPOINT, *([run_dir / snapshot_name(iteration)] if snapshot else [])]


def resume_checkpoint(run_dir: str | Path, cfg: TrainConfig, world_size: int = 1,
                      ) -> dict[str, Any] | None:
    """The folder's ``last.pth`` (``None`` when it holds none), checked before a run of ``cfg``
    over ``world_size`` processes resumes it: a run checkpoint whose tensors are finite
    (:func:`segda.checkpointing.load_run_checkpoint`), written by the same config over as many
    processes; otherwise :class:`segda.io.CheckpointError`."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    ckpt = checkpointing.load_run_checkpoint(path)
    if int(ckpt.get("world_size", 1)) != world_size:
        raise io.CheckpointError(
            f"{path} was written by a run over {ckpt.get('world_size', 1)} process(es); "
            f"resuming it over {world_size} would draw other images. Resume with the same number."
        )
    old = checkpointing.config_of(ckpt, path)
    if old != cfg:
        raise io.CheckpointError(
            f"{path} was written by a run of another config "
            f"({diff(old.to_dict(), cfg.to_dict())}); resuming it would mix two runs. "
            "Use another run folder, or retrain this one (retrain=True; command line: --retrain)"
        )
    return ckpt


TENSORBOARD_MISSING = ("run.tensorboard is true but the 'tensorboard' package is not installed: "
                       "pip install tensorboard, or set run.tensorboard=false")


def require_tensorboard(cfg: TrainConfig) -> None:
    """Refuse ``run.tensorboard`` without the package before a run starts (a
    :class:`segda.config.ConfigError` naming the key and the fix)."""
    import importlib.util

    if cfg.run.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise config_mod.ConfigError(TENSORBOARD_MISSING)


def tensorboard_writer(run_dir: str | Path):
    """A TensorBoard ``SummaryWriter`` on the run folder's ``tensorboard/``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # depends on the optional extra
        raise config_mod.ConfigError(TENSORBOARD_MISSING) from None
    return SummaryWriter(str(Path(run_dir) / TENSORBOARD))


def read_config(run_dir: str | Path) -> TrainConfig | None:
    """The config a run folder holds, or ``None`` when it holds none."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        return None
    fix = (f"retrain the folder (--retrain; library: retrain=True), or delete {path} to resume "
           f"from {CHECKPOINT}, whose own config is checked")
    try:
        data = config_mod.parse_yaml(path.read_text())
    except (config_mod.ConfigError, UnicodeDecodeError) as err:
        raise RunFileError(f"{path} is damaged ({err}); {fix}") from None
    if not isinstance(data, dict):
        what = "empty" if data is None else f"not a config mapping (it holds {data!r:.60})"
        raise RunFileError(f"{path} is {what}; it should hold the run's configuration; {fix}")
    try:
        return config_mod.from_dict(data)
    except config_mod.ConfigError as err:
        raise RunFileError(f"{path} does not hold a valid config ({err}); {fix}") from None


def check_run_dir(run_dir: str | Path, flag: str = "--run-dir") -> Path:
    """A run folder as a user gives it: an empty one would train into the working folder (for
    a notebook, into the source tree), so it is refused naming ``flag``; '.' typed out is kept."""
    if not str(run_dir).strip():
        raise config_mod.ConfigError(
            f"{flag} is empty: give a folder, e.g. runs/advent (write '.' for the working "
            "folder, which an empty value would have been)")
    return Path(run_dir)


def check_name(name: str, flag: str) -> str:
    """A run's folder name as a user gives it (``--name``): one plain path component, so that
    it is a folder of its own under the seed's folder, never the seed's folder itself nor one
    outside the run root."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise config_mod.ConfigError(
            f"{flag} {name!r} is not a folder name: give one plain name without '/' (e.g. "
            f"{flag} advent_long), the folder of the run under each seed<k>/")
    return name


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds something of a run: a checkpoint (``last.pth`` or a snapshot),
    its history or its results. A ``config.yaml`` alone is what a start that failed before
    its first checkpoint left: there is nothing to resume, so it binds nothing."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in (CHECKPOINT, METRICS, HISTORY)) or \
        any(run_dir.glob(SNAPSHOTS))


def check_config(run_dir: str | Path, cfg: TrainConfig) -> None:
    """Refuse a folder that holds a run of another configuration (results never mix); a
    config.yaml without a run beside it (:func:`holds_run`) is replaced by the next start."""
    old = read_config(run_dir)  # a damaged one is named even without a run
    if old is not None and old != cfg and holds_run(run_dir):
        raise ConfigMismatchError(
            f"{run_dir} holds a run with another config ({diff(old.to_dict(), cfg.to_dict())}); "
            "use another run folder, or retrain it (retrain=True; command line: --retrain)"
        )


def diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> str:
    """The keys whose values differ between two nested config dicts, ``key: old -> new``."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            inner = diff(va, vb, f"{prefix}{key}.")
            if inner:
                out.append(inner)
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return ", ".join(out)


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    io.write_text_atomic(Path(run_dir) / METRICS, json.dumps(metrics, indent=1))


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``metrics.json``; :class:`RunFileError` when it is damaged."""
    path = Path(run_dir) / METRICS
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problem = "empty" if path.stat().st_size == 0 else f"not valid JSON: {err}"
        metrics = problem
    if not isinstance(metrics, dict):
        problem = metrics if isinstance(metrics, str) else "not a JSON object"
        raise RunFileError(
            f"{path} is damaged ({problem}). Rerun the train command on {Path(run_dir)} to "
            f"rewrite it from {CHECKPOINT}, or delete it to leave the run out of the tables"
        )
    return metrics


def write_summaries(run_dir: str | Path, state: TrainState, cfg: TrainConfig) -> None:
    """``history.csv`` and ``metrics.json`` of a finished (or stopped) run."""
    import pandas as pd

    run_dir = Path(run_dir)
    io.write_text_atomic(run_dir / HISTORY,
                         pd.DataFrame(state.history).to_csv(index=False))
    write_metrics(run_dir, {
        "method": cfg.method.name,
        "levels": cfg.method.levels,
        "seed": cfg.run.seed,
        "train_on": cfg.data.train_on,
        "config_hash": config_hash(cfg),
        "iteration": state.iteration,
        "evals": state.evals,
        "wall_time_s": round(state.wall_time_s, 3),
        "environment": repro.environment(),
    })


def is_complete(run_dir: str | Path, cfg: TrainConfig) -> bool:
    """True when ``run_dir`` holds a finished run of exactly ``cfg``: its ``config.yaml`` is
    ``cfg``, and its ``metrics.json`` records that file's hash and the final iteration. A
    damaged or stale ``metrics.json`` (of another config, or from before segda recorded the
    hash) is not a result: the run is then resumed from its checkpoint, which rewrites it."""
    run_dir = Path(run_dir)
    if not ((run_dir / METRICS).exists() and (run_dir / CHECKPOINT).exists()):
        return False
    if read_config(run_dir) != cfg:
        return False
    try:
        metrics = read_metrics(run_dir)
    except RunFileError as err:
        warnings.warn(f"{err}; the run is resumed, which rewrites it", stacklevel=2)
        return False
    return (metrics.get("config_hash") == _config_file_hash(run_dir)
            and metrics.get("iteration", -1) >= cfg.optim.early_stop)


def clear_results(run_dir: str | Path) -> None:
    """Delete what a run wrote, and what was derived from it, before it is retrained:
    ``metrics.json`` first, so that a run killed mid-way never leaves a result next to another
    run's files, then ``history.csv``, the checkpoints, the evaluation tables ``eval``
    wrote beside them (:data:`EVAL_TABLES`, named by the checkpoint, not by the run) and the
    TensorBoard curves. The caller writes the new ``config.yaml`` afterwards."""
    import shutil

    run_dir = Path(run_dir)
    for path in [run_dir / METRICS, run_dir / HISTORY, run_dir / CHECKPOINT,
                 *sorted(run_dir.glob(SNAPSHOTS)),
                 *sorted(p for pattern in EVAL_TABLES for p in run_dir.glob(pattern))]:
        path.unlink(missing_ok=True)
        if path.name == METRICS:
            _sync_dir(run_dir)  # the removal is on disk before anything else changes
    if (run_dir / TENSORBOARD).is_dir():
        shutil.rmtree(run_dir / TENSORBOARD)
    _sync_dir(run_dir)


def _sync_dir(folder: Path) -> None:
    if not folder.is_dir() or os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_HELD: dict[Path, list] = {}  # run folders this process has locked: [fd, depth]


@contextlib.contextmanager
def lock(run_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (``fcntl.flock`` on its ``.lock`` file) for the
    block; another process that asks for it fails at once with :class:`RunLockedError` naming
    the holder's pid. The operating system releases the lock when the holder dies. Re-entrant
    within a process; a no-op where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        # the operating system names the sub-path it failed on ("Not a directory: F/seed0/x"),
        # or, under /proc, says "No such file or directory" of the folder it makes
        blocking = next((p for p in (run_dir, *run_dir.parents) if p.exists() and not p.is_dir()),
                        None)
        if blocking is not None:
            raise RunFileError(f"{blocking} is a file, so the run folder {run_dir} cannot be made: "
                               "give a --run-dir (or run_dir) elsewhere") from None
        raise RunFileError(f"cannot create the run folder {run_dir} ({err.strerror}): give a "
                           "--run-dir (or run_dir) in a folder you can write") from None
    key = run_dir.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLockedError(
            f"{run_dir} is in use: another training process (pid {holder}) holds its lock "
            f"({path}). Wait for it to finish or stop it, or train into another folder"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = [fd, 1]
        yield
    finally:
        _HELD.pop(key, None)
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _stale(run_dir: Path, metrics: dict[str, Any]) -> str:
    """Why ``metrics`` is not the result of the run ``run_dir`` holds ("" when it is)."""
    held = _config_file_hash(run_dir)
    if "config_hash" not in metrics or held is None:
        return ""  # an ensemble's folder, or a run from before segda recorded the hash
    if metrics["config_hash"] != held:
        return (f"it was computed by a run of another config (hash {metrics['config_hash']}; "
                f"{CONFIG}: {held}); rerun the train command on {run_dir} to finish its run")
    return ""


def start_of(cfg: TrainConfig | None) -> str:
    """What a run started from, without the machine's paths: ``shipped:<name>``, the folder
    of the run checkpoint it started from (``source_pretrain``), a file name, or ``""``."""
    init = cfg.model.init_checkpoint if cfg else ""
    if not init or init.startswith("shipped:"):
        return init
    path = Path(init)
    return path.parent.name if path.name == CHECKPOINT else path.name


def collect(run_root: str | Path):
    """One row per finished run under ``run_root`` (searched recursively): method, levels,
    seed, final target/source mIoU, training wall time, the machine, and the per-class target
    IoU."""
    import pandas as pd

    from segda.labels import CLASS_NAMES

    if not Path(run_root).is_dir():
        raise RunFileError(f"{run_root} does not exist or is not a folder; give the folder the "
                           "runs were trained under (e.g. runs/embedded)")
    rows = []
    for metrics_path in sorted(Path(run_root).rglob(METRICS)):
        run_dir = metrics_path.parent
        m = read_metrics(run_dir)
        if not m.get("evals"):
            continue
        stale = _stale(run_dir, m)
        if stale:
            warnings.warn(f"{metrics_path} is left out: {stale}", stacklevel=2)
            continue
        last = m["evals"][-1]
        env = m.get("environment", {})
        cfg = read_config(run_dir) if (run_dir / CONFIG).exists() else None  # ensembles: none
        row = {
            "run": str(run_dir.relative_to(run_root)),
            "method": m["method"],
            "levels": m.get("levels", ""),
            "train_on": m.get("train_on", "source"),
            "seed": m.get("seed", 0),
            "iterations": m.get("iteration"),
            "target_miou": 100 * last.get("target_miou", np.nan),
            "source_miou": 100 * last.get("source_miou", np.nan),
            # the validation images scored (0: every one), for a table to say how many
            # (a folder without config.yaml, an ensemble or a statistics row, records it)
            "eval_images": cfg.run.eval_max_images if cfg else int(m.get("eval_images") or 0),
            "wall_time_s": m.get("wall_time_s", np.nan),  # absent from runs older than the field
            "torch": env.get("torch", ""),
            "cpu": env.get("cpu") or env.get("platform", ""),  # older runs: their platform
            "threads": env.get("cpu_threads", ""),
            "gpu": env.get("gpu", ""),
            "lambda_adv_main": cfg.method.lambda_adv_main if cfg else np.nan,
            "start": start_of(cfg),
            # The run's own config (seed included) and its setting (the config at seed 0): runs
            # are grouped by setting, not by folder name (results.by_config).
            "config_hash": m.get("config_hash", ""),
            "setting_hash": config_hash(cfg.replace({"run.seed": 0})) if cfg else "",
        }
        for name, v in zip(CLASS_NAMES, last.get("target_iou", []), strict=False):
            row[f"iou_{name}"] = 100 * v
        rows.append(row)
    return pd.DataFrame(rows)
