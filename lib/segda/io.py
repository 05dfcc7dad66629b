"""Files written and read safely: the one place the package writes a file, hashes one, or loads
a ``.pth``.

* :func:`write_atomic` (and :func:`save_atomic`, :func:`write_text_atomic` on it): the data go
  to a temporary file in the same folder, are synced to disk, then renamed over the target, so
  a crash leaves either the previous file or the new one, never half of one. The file's
  permissions follow the umask like any other file's. A full disk raises
  :class:`DiskFullError` naming the file and the space it needs; a killed write leaves a
  temporary that :func:`remove_temporaries` deletes.
* :func:`sha256` / :func:`sha256_bytes`: the hex SHA-256 of a file (read in blocks) or of bytes.
* :func:`load_file`: ``torch.load(..., weights_only=True)`` on the CPU (optionally memory-mapped),
  with errors that name the file and say what it is: missing, empty, not a PyTorch file, or
  refused because unpickling it would run code.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import pickle
import pickletools
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from segda.errors import UserError


class CheckpointError(ValueError, UserError):
    """A checkpoint file cannot be used; the message names the file and what it should be."""


class DiskFullError(OSError, UserError):
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


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any], size_hint: int = 0, *,
                 check: Callable[[Path], Any] | None = None, sync: bool = True) -> Path:
    """Call ``write(file)`` on a temporary file in the same folder, then rename it over ``path``.

    ``check(temporary)``, when given, runs once the data are on disk and before the rename; an
    exception it raises leaves ``path`` as it was (it may move the temporary elsewhere first,
    to keep a rejected file). A crash mid-write leaves the previous file intact (rename is
    atomic on POSIX and Windows); a killed write leaves a temporary that
    :func:`remove_temporaries` deletes. A full disk raises :class:`DiskFullError` naming the
    file and the space it needs (``size_hint`` bytes). ``sync=False`` skips the ``fsync``
    (the rename stays atomic, but after a power loss the file may be empty): for the many small
    files of a step whose completion another, synced file records.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; written files are shared like others
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        if check is not None:
            check(Path(tmp))
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
    """``torch.save`` to ``path`` atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda f: torch.save(obj, f), size_hint=_tensor_bytes(obj))


def copy_atomic(source: str | Path, path: str | Path) -> bytes:
    """Copy ``source`` to ``path`` with :func:`write_atomic`; returns the bytes copied."""
    data = Path(source).read_bytes()
    write_atomic(path, lambda f: f.write(data))
    return data


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file atomically (see :func:`write_atomic`)."""
    data = text.encode()
    return write_atomic(path, lambda f: f.write(data), size_hint=len(data))


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries that killed writes left in ``folder`` (call it only while no
    other process writes there, e.g. under a run folder's lock). Returns what was removed."""
    removed = []
    for tmp in sorted(Path(folder).glob(f".*{TEMP_SUFFIX}")):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def sha256_bytes(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256(path: str | Path, block: int = 1 << 20) -> str:
    """The hex SHA-256 of the file at ``path``, read ``block`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_file(path: str | Path, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file.

    ``mmap``: map the file's tensors instead of reading them (a large file costs memory only
    for what is used). Raises :class:`FileNotFoundError`, or :class:`CheckpointError` for an
    empty file, a file that is not a PyTorch checkpoint (or is damaged), and a file that holds
    Python objects other than tensors and plain containers (refused: unpickling them could run
    code).
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
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap or None)
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
