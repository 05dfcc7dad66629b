"""Run folders: the only module that writes or reads their files, and tables over many of them.

A run folder holds:

* ``config.yaml``: the run's configuration (written when the run starts);
* ``last.pth`` (and ``iter_XXXXXX.pth`` snapshots): checkpoints (:mod:`segda.checkpointing`);
* ``history.csv`` and ``metrics.json``: the loss history and the evaluations (written when the
  run ends); an ensemble's folder holds only ``metrics.json``.

Every file is written atomically. :func:`check_config` is the one check that a folder holds no
run of another configuration; the library, the command line and data-parallel runs all use it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segda import checkpointing, repro
from segda import config as config_mod
from segda.config import TrainConfig

if TYPE_CHECKING:
    from segda.methods import TrainState

CONFIG = "config.yaml"
METRICS = "metrics.json"
HISTORY = "history.csv"
CHECKPOINT = "last.pth"


def config_hash(cfg: TrainConfig) -> str:
    """A short stable digest of a configuration: the first 8 hex digits of the SHA-256 of its
    canonical YAML (``cfg.to_yaml()``). Equal configs hash equally, across processes and
    machines."""
    return hashlib.sha256(cfg.to_yaml().encode()).hexdigest()[:8]


def write_config(run_dir: str | Path, cfg: TrainConfig) -> None:
    checkpointing.write_text_atomic(Path(run_dir) / CONFIG, cfg.to_yaml())


def read_config(run_dir: str | Path) -> TrainConfig | None:
    """The config a run folder holds, or ``None`` when it holds none."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        return None
    return config_mod.from_dict(config_mod.parse_yaml(path.read_text()))


def check_config(run_dir: str | Path, cfg: TrainConfig) -> None:
    """Refuse a folder that holds a run of another configuration (results never mix)."""
    old = read_config(run_dir)
    if old is not None and old != cfg:
        raise ValueError(
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
    checkpointing.write_text_atomic(Path(run_dir) / METRICS, json.dumps(metrics, indent=1))


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / METRICS).read_text())


def write_summaries(run_dir: str | Path, state: TrainState, cfg: TrainConfig) -> None:
    """``history.csv`` and ``metrics.json`` of a finished (or stopped) run."""
    import pandas as pd

    run_dir = Path(run_dir)
    checkpointing.write_text_atomic(run_dir / HISTORY,
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
    """True when ``run_dir`` holds a finished run of exactly ``cfg``."""
    run_dir = Path(run_dir)
    if not ((run_dir / METRICS).exists() and (run_dir / CHECKPOINT).exists()):
        return False
    same = read_config(run_dir) == cfg
    return same and read_metrics(run_dir).get("iteration", -1) >= cfg.optim.early_stop


def collect(run_root: str | Path):
    """One row per finished run under ``run_root`` (searched recursively): method, levels,
    seed, final target/source mIoU, training wall time, the machine, and the per-class target
    IoU."""
    import pandas as pd

    from segda.labels import CLASS_NAMES

    rows = []
    for metrics_path in sorted(Path(run_root).rglob(METRICS)):
        run_dir = metrics_path.parent
        m = read_metrics(run_dir)
        if not m.get("evals"):
            continue
        last = m["evals"][-1]
        env = m.get("environment", {})
        row = {
            "run": str(run_dir.relative_to(run_root)),
            "method": m["method"],
            "levels": m.get("levels", ""),
            "train_on": m.get("train_on", "source"),
            "seed": m.get("seed", 0),
            "iterations": m.get("iteration"),
            "target_miou": 100 * last.get("target_miou", np.nan),
            "source_miou": 100 * last.get("source_miou", np.nan),
            "wall_time_s": m.get("wall_time_s", np.nan),  # absent from runs older than the field
            "torch": env.get("torch", ""),
            "cpu": env.get("cpu") or env.get("platform", ""),  # older runs: their platform
            "threads": env.get("cpu_threads", ""),
            "gpu": env.get("gpu", ""),
        }
        for name, v in zip(CLASS_NAMES, last.get("target_iou", []), strict=False):
            row[f"iou_{name}"] = 100 * v
        rows.append(row)
    return pd.DataFrame(rows)
