"""Run folders: train what is missing, reuse what is there, collect results into tables.

A run folder holds ``config.yaml``, ``last.pth``, ``history.csv`` and ``metrics.json``
(written by :func:`segda.train.fit`). Notebooks call :func:`ensure_run` so that a later
notebook reuses an earlier notebook's source-only checkpoint instead of retraining it, and a
re-executed notebook picks up a finished run in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segda import config as config_mod
from segda.config import TrainConfig


def is_complete(run_dir: str | Path, cfg: TrainConfig) -> bool:
    """True when ``run_dir`` holds a finished run of exactly ``cfg``."""
    run_dir = Path(run_dir)
    metrics, saved = run_dir / "metrics.json", run_dir / "config.yaml"
    if not (metrics.exists() and saved.exists() and (run_dir / "last.pth").exists()):
        return False
    same = config_mod.from_dict(config_mod.parse_yaml(saved.read_text())) == cfg
    done = json.loads(metrics.read_text()).get("iteration", -1) >= cfg.optim.early_stop
    return same and done


def ensure_run(run_dir: str | Path, cfg: TrainConfig, *, data=None, retrain: bool = False):
    """Train ``cfg`` into ``run_dir`` unless a finished identical run is already there.

    Returns a :class:`segda.train.RunResult` (loaded from disk when reused). A run folder with
    a *different* config is an error, so results never silently mix configurations.
    """
    from segda import train

    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if saved.exists() and not retrain:
        old = config_mod.from_dict(config_mod.parse_yaml(saved.read_text()))
        if old != cfg:
            diff = _diff(old.to_dict(), cfg.to_dict())
            raise ValueError(
                f"{run_dir} holds a run with another config ({diff}); use another run folder "
                "or pass retrain=True"
            )
    if not retrain and is_complete(run_dir, cfg):
        return load_run(run_dir, data=data)
    return train.fit(cfg, run_dir, data=data, resume=not retrain)


def load_run(run_dir: str | Path, data=None):
    """Rebuild a :class:`segda.train.RunResult` from a run folder's ``last.pth``."""
    from segda import checkpointing, repro, train

    run_dir = Path(run_dir)
    ckpt = checkpointing.load_run_checkpoint(run_dir / "last.pth")
    cfg = config_mod.from_dict(ckpt["config"])
    state = train.build_state(cfg, repro.resolve_device(cfg.run.device))
    rng = repro.rng_state()
    train.load_state_into(state, ckpt)
    repro.set_rng_state(rng)  # loading a finished run must not disturb the caller's RNG
    state.seg.eval()
    return train.RunResult(state, cfg, run_dir, 0.0)


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> str:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            inner = _diff(va, vb, f"{prefix}{key}.")
            if inner:
                out.append(inner)
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return ", ".join(out)


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def collect(run_root: str | Path):
    """One row per finished run under ``run_root`` (searched recursively): method, levels,
    seed, final target/source mIoU, training wall time, the machine, and the per-class target
    IoU."""
    import pandas as pd

    from segda.labels import CLASS_NAMES

    rows = []
    for metrics_path in sorted(Path(run_root).rglob("metrics.json")):
        run_dir = metrics_path.parent
        m = json.loads(metrics_path.read_text())
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
