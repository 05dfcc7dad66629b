"""Seeding, random-number-generator state, devices and the environment report."""

from __future__ import annotations

import functools
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segda.errors import UserError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All global RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _listify(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _listify(x: Any) -> Any:
    return [_listify(v) for v in x] if isinstance(x, tuple | list) else x


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class DeviceError(ValueError, UserError):
    """The configured device is not on this machine (``run.device=cuda`` without CUDA)."""


def check_device(device: str, key: str = "run.device") -> None:
    """Refuse a device this machine lacks, before anything is created, in one line naming
    ``key``. ``"gpu"`` is not a torch device name: it is refused with the name to use."""
    if device == "auto":
        return
    if device.split(":")[0] == "gpu":
        raise DeviceError(f"{key}={device!r} is not a device name; use 'cuda' (or 'auto')")
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise DeviceError(f"{key}={device!r} is not a device name; use 'auto', 'cpu' or 'cuda'") from None
    if kind == "cuda" and not torch.cuda.is_available():
        flag = key.startswith("-")  # a flag (--device cpu) or a config key (run.device=cpu)
        given, fix = (f"{key} {device}", f"{key} cpu") if flag else (f"{key}={device!r}",
                                                                     f"{key}=cpu")
        raise DeviceError(f"{given} but this machine has no CUDA device; set {fix} (or auto)")


def git_sha(path: str | Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=path or Path(__file__).parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache  # environment() runs at every checkpoint; the CPU does not change
def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, str]:
    """What produced a result: versions, device, CPU, threads, git revision."""
    env = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_cores": str(os.cpu_count()),
        "cpu_threads": str(torch.get_num_threads()),
        "git": git_sha(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env
