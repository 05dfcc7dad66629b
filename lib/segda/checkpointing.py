"""Run checkpoints: the format, written atomically, loaded with ``weights_only=True``.

A checkpoint holds everything needed to continue a run exactly: segmenter, discriminators,
optimizers, the next iteration, RNG states, the loss history so far and the config. This
module is the only one that knows the format (:func:`run_state`, :func:`load_state_into`,
:func:`is_run_checkpoint`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from segda import config, models, repro

if TYPE_CHECKING:
    from segda.config import TrainConfig
    from segda.methods import TrainState


def _write_atomic(path: str | Path, write) -> Path:
    """Call ``write(file)`` on a temporary file in the same folder, then rename it over ``path``.

    A crash mid-write leaves the previous file intact (rename is atomic on POSIX and Windows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (see :func:`_write_atomic`)."""
    return _write_atomic(path, lambda f: torch.save(obj, f))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file (a run's config, metrics, history) the way checkpoints are written."""
    return _write_atomic(path, lambda f: f.write(text.encode()))


def load_run_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------ the run format

RUN_FORMAT = "segda-run-v1"


def is_run_checkpoint(blob: Any) -> bool:
    """True for what :func:`run_state` wrote (as opposed to an official or bare state dict)."""
    return isinstance(blob, dict) and blob.get("format") == RUN_FORMAT


def run_state(state: TrainState, cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint of a run: modules, optimizers, the next iteration, RNG states, history."""
    blob = {
        "format": RUN_FORMAT,
        "config": cfg.to_dict(),
        "iteration": state.iteration,
        "segmenter": state.seg.state_dict(),
        "discriminators": {k: d.state_dict() for k, d in state.discs.items()},
        "opt_seg": state.opt_seg.state_dict(),
        "opt_discs": {k: o.state_dict() for k, o in state.opt_discs.items()},
        "rng": repro.rng_state(),
        "history": state.history,
        "evals": state.evals,
        "wall_time_s": state.wall_time_s,
        "environment": repro.environment(),
    }
    if state.dist is not None:
        blob["world_size"] = state.dist.world_size
    return blob


def load_state_into(state: TrainState, ckpt: dict[str, Any]) -> None:
    """Put a run checkpoint back into ``state`` (built from the same config) and the RNGs."""
    state.seg.load_state_dict(ckpt["segmenter"])
    for k, d in state.discs.items():
        d.load_state_dict(ckpt["discriminators"][k])
    state.opt_seg.load_state_dict(ckpt["opt_seg"])
    for k, o in state.opt_discs.items():
        o.load_state_dict(ckpt["opt_discs"][k])
    state.iteration = int(ckpt["iteration"])
    state.history = list(ckpt["history"])
    state.evals = list(ckpt["evals"])
    state.wall_time_s = float(ckpt.get("wall_time_s", 0.0))  # absent before segda recorded it
    repro.set_rng_state(ckpt["rng"])


def load_segmenter_weights(seg: nn.Module, path: str | Path, kind: str = "auto") -> None:
    """Warm start: a segda run checkpoint (its segmenter) or an official checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"init checkpoint not found: {path} (set model.init_checkpoint to an existing file, "
            "or '' to start from scratch)"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if is_run_checkpoint(blob):
        seg.load_state_dict(blob["segmenter"])
    else:
        models.load_checkpoint(seg, path, kind=kind)


def config_of(blob: dict[str, Any]) -> TrainConfig:
    """The config a run checkpoint was trained with."""
    return config.from_dict(blob["config"])


def segmenter_from_run(blob: dict[str, Any]) -> tuple[nn.Module, TrainConfig]:
    """The trained segmenter of a run checkpoint, and the run's config."""
    cfg = config_of(blob)
    seg = models.build_segmenter(
        cfg.model.name, cfg.model.num_classes, cfg.model.multi_level, cfg.model.aspp_branches,
        cfg.model.bn_mode,
    )
    seg.load_state_dict(blob["segmenter"])
    return seg, cfg
