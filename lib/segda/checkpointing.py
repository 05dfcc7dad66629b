"""Run checkpoints: the format, the save, and the checks of a loaded one.

A checkpoint holds everything needed to continue a run exactly: segmenter, discriminators,
optimizers, the next iteration, RNG states, the loss history so far and the config. This
module is the only one that knows the format (:func:`run_state`, :func:`load_state_into`,
:func:`is_run_checkpoint`) and the only one that writes it: :func:`save`, which the fit loop
calls, refuses a state with a non-finite tensor (:class:`NonFiniteStateError`) and writes each
file atomically (:func:`segda.io.save_atomic`), so ``last.pth`` is always a state worth
resuming; the run folder's module (:mod:`segda.runs`) names the files.

Every file is read through :func:`segda.io.load_file`, whose errors name the file and say what
it is (empty, not a PyTorch file, refused because it would run code); a run checkpoint is also
checked for non-finite tensors (:func:`non_finite`) before it is resumed or evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from segda import config, io, models, repro, shipped
from segda.errors import UserError
from segda.io import CheckpointError
from segda.models.checkpoints import load_loaded

if TYPE_CHECKING:
    from segda.config import TrainConfig
    from segda.train_state import TrainState


# The NaN stop's two errors live here, below both places that raise them (the loss log,
# segda.trainlog, and the save): a caller catches the stop as one class, NonFiniteLossError.
class NonFiniteLossError(RuntimeError, UserError):
    """A loss became NaN or infinite; the run stops and its last checkpoint is left intact."""


class NonFiniteStateError(NonFiniteLossError):
    """A tensor of the training state (a weight, a batch-norm statistic, an optimizer moment)
    became NaN or infinite; the run stops before writing it, leaving the last checkpoint."""


def non_finite(tree: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in ``tree`` (nested dicts, lists, a module's
    state dict, an optimizer's) that hold NaN or infinite values."""
    if isinstance(tree, torch.Tensor):
        if (tree.is_floating_point() or tree.is_complex()) and not bool(torch.isfinite(tree).all()):
            return [prefix.rstrip(".")]
        return []
    if isinstance(tree, float):
        return [] if math.isfinite(tree) else [prefix.rstrip(".")]
    if isinstance(tree, dict):
        return [n for k, v in tree.items() for n in non_finite(v, f"{prefix}{k}.")]
    if isinstance(tree, list | tuple):
        return [n for i, v in enumerate(tree) for n in non_finite(v, f"{prefix}{i}.")]
    return []


def _listing(names: list[str], shown: int = 4) -> str:
    more = f", ... {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def check_finite(tree: Any, path: str | Path, what: str = "it") -> None:
    """Raise :class:`CheckpointError` when a loaded file holds non-finite tensors."""
    bad = non_finite(tree)
    if bad:
        raise CheckpointError(
            f"{path} holds {len(bad)} non-finite tensor(s) ({_listing(bad)}): {what} would give "
            "meaningless results. Retrain the run (--retrain), or use an earlier "
            "iter_XXXXXX.pth snapshot"
        )


# The parts of a run checkpoint that are tensors of the trained state.
STATE_KEYS = ("segmenter", "discriminators", "opt_seg", "opt_discs")


def _model_state(blob: dict[str, Any]) -> dict[str, Any]:
    return {k: blob[k] for k in STATE_KEYS if k in blob}


def training_tensors(state: TrainState) -> dict[str, Any]:
    """The tensors a checkpoint holds of ``state``: the modules' parameters and buffers and
    the optimizers' states, under :data:`STATE_KEYS`."""
    return {
        "segmenter": state.seg.state_dict(),
        "discriminators": {k: d.state_dict() for k, d in state.discs.items()},
        "opt_seg": state.opt_seg.state_dict(),
        "opt_discs": {k: o.state_dict() for k, o in state.opt_discs.items()},
    }


def load_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """A run checkpoint (what :func:`run_state` wrote), checked: a segda run checkpoint, its
    model and optimizer tensors finite. Errors name the file (see :func:`segda.io.load_file`)."""
    path = Path(path)
    blob = io.load_file(path)
    if not is_run_checkpoint(blob):
        held = (f"a dict with keys {_listing([str(k) for k in blob], 6)}"
                if isinstance(blob, dict) else f"a {type(blob).__name__}")
        raise CheckpointError(
            f"{path} is not a segda run checkpoint (it holds {held}); a run folder's "
            f"{path.name} is written by 'python -m segda train'. To start a run from other "
            "weights, set model.init_checkpoint to the file instead"
        )
    check_finite(_model_state(blob), path, "resuming or evaluating it")
    return blob


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
        **training_tensors(state),
        "rng": repro.rng_state(),
        "history": state.history,
        "evals": state.evals,
        "wall_time_s": state.wall_time_s,
        "environment": repro.environment(),
    }
    if state.dist is not None:
        blob["world_size"] = state.dist.world_size
    return blob


def save(state: TrainState, cfg: TrainConfig, files: Sequence[Path], kept: str) -> None:
    """Write the checkpoint of ``state`` (:func:`run_state`) to each of ``files`` (``last.pth``
    and a snapshot: :func:`segda.runs.checkpoint_files`), each atomically, only when every
    tensor of the state is finite; otherwise raise :class:`NonFiniteStateError`, ``kept``
    saying what the stopped run leaves. With no ``files`` it only checks (the ranks of a
    data-parallel run but the one that writes)."""
    bad = non_finite(training_tensors(state))
    if bad:
        raise NonFiniteStateError(
            f"non-finite values in the training state at iteration {state.iteration}: "
            f"{len(bad)} tensor(s) ({_listing(bad)}); the run stopped without writing them and "
            f"{kept} (lower the learning rate or lambdas, or check the labels)"
        )
    if files:
        blob = run_state(state, cfg)
        for path in files:
            io.save_atomic(blob, path)


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
    """Warm start: a segda run checkpoint (its segmenter), an official checkpoint, or shipped
    weights (``"shipped:<name>"``, verified by SHA-256: :mod:`segda.shipped`)."""
    path = shipped.resolve(path) if shipped.is_shipped(path) else Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"init checkpoint not found: {path} (set model.init_checkpoint to an existing file, "
            "or '' to start from scratch)"
        )
    blob = read_weights(path, "starting from it")
    if is_run_checkpoint(blob):
        try:
            seg.load_state_dict(blob["segmenter"])
        except RuntimeError:  # torch lists the tensors; the user needs the keys that differ
            held = config_of(blob, path).model
            keys = " ".join(f"model.{k}={getattr(held, k)!r}" for k in (
                "name", "num_classes", "multi_level", "aspp_branches"))
            raise CheckpointError(
                f"model.init_checkpoint {path} holds a segmenter of another architecture than "
                f"this run's; its run had {keys}: set these keys to its values (--set), or "
                "start from another checkpoint") from None
    else:
        load_loaded(seg, blob, str(path), kind=kind)


def read_weights(path: str | Path, what: str) -> Any:
    """A file of segmenter weights, read once: a run checkpoint (its segmenter is checked) or an
    official / bare state dict (all of it is checked). Non-finite tensors are refused, the
    message saying that ``what`` would give meaningless results."""
    blob = io.load_file(path)
    check_finite({"segmenter": blob["segmenter"]} if is_run_checkpoint(blob) else blob, path, what)
    return blob


def config_of(blob: dict[str, Any], path: str | Path | None = None) -> TrainConfig:
    """The config a run checkpoint (read from ``path``, named in errors) was trained with."""
    try:
        return config.from_dict(blob["config"])
    except config.ConfigError as err:
        where = path if path is not None else "the checkpoint"
        raise CheckpointError(
            f"{where} holds a config this version of segda cannot read ({err}); it was "
            "written by another version: retrain the run (--retrain)"
        ) from None


def segmenter_from_run(blob: dict[str, Any], path: str | Path | None = None,
                       ) -> tuple[nn.Module, TrainConfig]:
    """The trained segmenter of a run checkpoint, and the run's config."""
    cfg = config_of(blob, path)
    seg = models.build_segmenter(
        cfg.model.name, cfg.model.num_classes, cfg.model.multi_level, cfg.model.aspp_branches,
        cfg.model.bn_mode,
    )
    seg.load_state_dict(blob["segmenter"])
    return seg, cfg


# ------------------------------------------------------------------ checkpoint files identified


def require_init_checkpoint(value: str) -> None:
    """``model.init_checkpoint`` names a file (or verified shipped weights), checked before a
    new run's folder is made: a wrong path would otherwise leave a folder of another config."""
    if not value:
        return
    path = shipped.resolve(value) if shipped.is_shipped(value) else Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"init checkpoint not found: {path} (set model.init_checkpoint to "
                                "an existing file, or '' to start from scratch)")


def segmenter_of_file(path: Path, model: str, aspp_branches: int | None = None,
                      ) -> tuple[nn.Module, TrainConfig]:
    """The segmenter of a checkpoint file and the config it predicts with: a run checkpoint's
    own, or (an official file) the defaults for ``model`` (``aspp_branches``: None reads them
    from the official file's name). A folder, or weights of another model, is refused with the
    fix (the checkpoint files in the folder; the model the weights fit)."""
    from segda.models import checkpoints

    if path.is_dir():
        found = sorted(path.glob("*.pth"), key=lambda p: (p.name != "last.pth", p.name))
        held = (f"the checkpoints in it: {', '.join(p.name for p in found)}; pass one of them, "
                f"e.g. --checkpoint {found[0]}" if found else "it holds no checkpoint (*.pth)")
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; {held}")
    # Read once; errors name the file, pickled code and non-finite tensors are refused.
    blob = read_weights(path, "evaluating it")
    if is_run_checkpoint(blob):
        return segmenter_from_run(blob, path)
    branches = aspp_branches or checkpoints.aspp_branches_for(path.name)
    cfg = config.load(None, {"model.name": model, "model.aspp_branches": branches,
                             "model.multi_level": model != "deeplab_vgg16"})
    seg = models.build_segmenter(model, 19, cfg.model.multi_level, branches)
    try:
        checkpoints.load_loaded(seg, blob, str(path), kind="adapted")
    except checkpoints.CheckpointMismatchError:
        fits = architecture_of(blob, branches, exclude=model)
        if fits is None:
            raise
        raise CheckpointError(f"{path} holds weights of the {fits!r} model, not of --model "
                              f"{model} (the default for official checkpoints): pass "
                              f"--model {fits}") from None
    return seg, cfg


def architecture_of(blob: Any, aspp_branches: int, exclude: str | None = None) -> str | None:
    """The segmenter (other than ``exclude``) whose tensors (names and shapes) are exactly
    ``blob``'s, built without memory on the meta device; None when ``blob`` is not a plain state
    dict or none fits."""
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        return None
    shapes = {k: tuple(v.shape) for k, v in blob.items()}
    for name in (n for n in models.SEGMENTERS if n != exclude):
        for multi_level in (True, False):
            try:
                with torch.device("meta"):
                    seg = models.build_segmenter(name, 19, multi_level, aspp_branches)
            except ValueError:  # a combination the model does not have (VGG: one level)
                continue
            if {k: tuple(v.shape) for k, v in seg.state_dict().items()} == shapes:
                return name
    return None


def shipped_segmenter(cfg: config.TrainConfig, name: str = shipped.EMBEDDED_PRETRAINED) -> nn.Module:
    """The segmenter of ``cfg``'s model with a shipped checkpoint's weights (SHA-256 checked on
    load), in eval mode."""
    seg = models.build_segmenter(cfg.model.name, cfg.model.num_classes, cfg.model.multi_level,
                                 cfg.model.aspp_branches)
    load_segmenter_weights(seg, shipped.reference(name))
    return seg.eval()
