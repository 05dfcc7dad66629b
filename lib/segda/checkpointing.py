"""Run checkpoints: the format, written atomically, loaded with ``weights_only=True``.

A checkpoint holds everything needed to continue a run exactly: segmenter, discriminators,
optimizers, the next iteration, RNG states, the loss history so far and the config. This
module is the only one that knows the format (:func:`run_state`, :func:`load_state_into`,
:func:`is_run_checkpoint`).

Every file is read through :func:`load_file`, whose errors name the file and say what it is
(empty, not a PyTorch file, refused because it would run code); a run checkpoint is also
checked for non-finite tensors (:func:`non_finite`) before it is resumed or evaluated.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import pickle
import pickletools
import re
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from segda import config, models, repro, shipped
from segda.models.checkpoints import load_loaded

if TYPE_CHECKING:
    from segda.config import TrainConfig
    from segda.methods import TrainState


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and what it should be."""


class DiskFullError(OSError):
    """No space was left on the device while writing a file; the previous file is intact."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without "[Errno 28]"


TEMP_SUFFIX = ".tmp"  # temporaries are ".<name>.<random>.tmp" beside the file they replace


@functools.cache
def _umask() -> int:
    """The process's umask (read once: reading it means setting it for an instant)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _no_space(err: BaseException) -> bool:
    """True when ``err`` (or an exception it was raised from) is ENOSPC. ``torch.save`` turns
    the writer's ``OSError`` into a ``RuntimeError`` ("unexpected pos") whose context it is."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _write_atomic(path: str | Path, write, size_hint: int = 0) -> Path:
    """Call ``write(file)`` on a temporary file in the same folder, then rename it over ``path``.

    A crash mid-write leaves the previous file intact (rename is atomic on POSIX and Windows);
    a killed write leaves a temporary that :func:`remove_temporaries` deletes. A full disk
    raises :class:`DiskFullError` naming the file and the space it needs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; run files are shared like others
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, Exception) and _no_space(err):
            free = shutil.disk_usage(path.parent).free
            kept = (f"the previous {path.name} is intact" if path.exists()
                    else f"no {path.name} was written")
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on device writing {path}: it needs about {_mib(size_hint)} free "
                f"in {path.parent} ({_mib(free)} free now); {kept}. Free some space and rerun "
                "the same command to continue",
            ) from err
        raise
    return path


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (see :func:`_write_atomic`)."""
    return _write_atomic(path, lambda f: torch.save(obj, f), size_hint=_tensor_bytes(obj))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file (a run's config, metrics, history) the way checkpoints are written."""
    data = text.encode()
    return _write_atomic(path, lambda f: f.write(data), size_hint=len(data))


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries that killed writes left in ``folder`` (call it only while no
    other process writes there: under the run folder's lock). Returns what was removed."""
    removed = []
    for tmp in sorted(Path(folder).glob(f".*{TEMP_SUFFIX}")):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def load_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file.

    Raises :class:`FileNotFoundError`, or :class:`CheckpointError` for an empty file, a file
    that is not a PyTorch checkpoint (or is damaged), and a file that holds Python objects
    other than tensors and plain containers (refused: unpickling them could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"checkpoint not found: {path}", str(path))
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes): its write was cut short or the disk was full. "
            "It holds nothing to load; delete it (a run then restarts from scratch) or "
            "retrain the run (--retrain)"
        )
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol warning comes before our error
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        code = _imported_globals(path, err)
        if code:
            raise CheckpointError(
                f"refused to load {path}: it holds Python objects other than tensors and plain "
                f"containers ({', '.join(code)}), and unpickling them could run code. segda "
                "and the official releases never write such files; do not load it unless you "
                "trust its source"
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (torch.load with weights_only=True "
            "cannot read it); it may be truncated or another kind of file"
        ) from None
    except Exception as err:  # torch reports bad files as RuntimeError, EOFError, KeyError...
        reason = f"{type(err).__name__}: {err}".strip().splitlines()[0]
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({reason}); it may be truncated "
            "or another kind of file"
        ) from None


def _imported_globals(path: Path, err: Exception) -> list[str]:
    """What a refused file would import when unpickled (empty: it is no pickle of objects).
    Read from torch's refusal for its zip format, else from the opcodes of a plain pickle
    (``pickletools`` lists them without running anything)."""
    found = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    if found or zipfile.is_zipfile(path):
        return found
    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    names.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
                if op.name == "STOP":
                    break
    except Exception:  # not a pickle at all
        return []
    return names


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
    model and optimizer tensors finite. Errors name the file (see :func:`load_file`)."""
    path = Path(path)
    blob = load_file(path)
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
        seg.load_state_dict(blob["segmenter"])
    else:
        load_loaded(seg, blob, str(path), kind=kind)


def read_weights(path: str | Path, what: str) -> Any:
    """A file of segmenter weights, read once: a run checkpoint (its segmenter is checked) or an
    official / bare state dict (all of it is checked). Non-finite tensors are refused, the
    message saying that ``what`` would give meaningless results."""
    blob = load_file(path)
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
