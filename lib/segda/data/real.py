"""What GTA5, Cityscapes and SYNTHIA share: file decoding, the official pre-processing, errors.

Pre-processing follows the official loaders (AdaptSegNet ``dataset/*_dataset.py``, ADVENT
``advent/dataset/base_dataset.py``):

1. resize the RGB image to the configured ``size`` (W, H) with bicubic interpolation and the
   label with nearest neighbour (no crop; GTA5's ~1914x1052 becomes 1280x720);
2. ``normalization="caffe"``: reverse the channels to BGR and subtract
   ``CAFFE_MEAN_BGR`` from the 0..255 values (no /255, no std): what the DeepLab-v2 caffe init
   expects. ``"imagenet"``: RGB in [0, 1], minus the ImageNet mean, divided by its std.

Resizing goes through PIL, as in the official code, so the numbers match it exactly; decoding
uses ``torchvision.io.decode_png``, which is faster and reads 16-bit PNGs (SYNTHIA's labels),
which PIL silently truncates to 8 bits.

Every failure raises a :class:`DatasetError` subclass whose message names the file or folder
and the ``data_scripts`` command that fixes it.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_png, read_file

from segda import io
from segda.data.stats import label_class_counts
from segda.errors import UserError
from segda.labels import IGNORE_INDEX, NUM_CLASSES

CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)  # official IMG_MEAN, B,G,R order
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("caffe", "imagenet")

REPORT_NAME = "segda_prepare_report.json"  # written by the prepare scripts at the dataset root


class DatasetError(RuntimeError, UserError):
    """Something about a dataset on disk is wrong; the message says what and how to fix it."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset root does not exist."""


class MissingFilesError(DatasetError, FileNotFoundError):
    """Files named by the split list (or produced by the prepare step) are absent."""


class CountMismatchError(DatasetError):
    """The number of files differs from the official count."""


class LabelValueError(DatasetError, ValueError):
    """A label file holds values outside the expected set."""


class CorruptImageError(DatasetError):
    """A PNG cannot be decoded (truncated or not a PNG)."""


class BitDepthError(DatasetError, ValueError):
    """A PNG has another bit depth than its folder's files (16-bit where 8-bit is expected)."""


class SizeMismatchError(DatasetError, ValueError):
    """An image and its label have different sizes."""


def require_root(root: str | Path, dataset: str, prepare_command: str) -> Path:
    """``root`` as a Path; raises if it is not a folder. ``prepare_command`` is the dataset
    module's ``PREPARE_COMMAND`` (a template with ``{root}``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"{dataset} root not found: {root}. Download the dataset (see data_scripts/README.md), "
            f"then run: {prepare_command.format(root=root)}"
        )
    return root


def read_list(path: str | Path) -> list[str]:
    """The names in a list file: one per line, as in the official lists (AdaptSegNet/ADVENT
    ``gta5_list/train.txt``, ``cityscapes_list/{train,val}.txt``); blank lines are skipped."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise MissingFilesError(f"list file {path} is a folder; give the list file itself (one "
                                "image name per line), e.g. --list val=FOLDER/val.txt")
    if not path.is_file():
        raise MissingFilesError(f"list file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"list file {path} names no files; write one name per line")
    return names


def check_list_splits(lists: Mapping[str, str | Path] | None, splits: Sequence[str]) -> dict:
    """``lists`` (split -> list file) as a dict; an unknown split is an error."""
    lists = dict(lists or {})
    unknown = sorted(set(lists) - set(splits))
    if unknown:
        raise ValueError(f"list files given for splits {unknown}; this dataset has {list(splits)}")
    return lists


def from_list(list_file: str | Path | None) -> str:
    """`` (named by list L)`` for error messages about files a list names; empty without one."""
    return f" (named by list {list_file})" if list_file else ""


def list_files(folder: Path) -> set[str]:
    """Names of the plain files in ``folder`` (one directory read, no per-file stat)."""
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it if not e.is_dir()}
    except FileNotFoundError:
        return set()


def summarize(names: Sequence[str], limit: int = 5) -> str:
    head = ", ".join(str(n) for n in list(names)[:limit])
    more = len(names) - limit
    return head + (f" ... and {more} more" if more > 0 else "")


# ---------------------------------------------------------------------------------- decoding


PNG_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}


def png_header(path: str | Path) -> tuple[int, int, int, int]:
    """``(width, height, bit depth, colour type)`` from a PNG's IHDR chunk, without decoding
    the pixels (colour types: :data:`PNG_COLOUR_TYPES`)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise CorruptImageError(f"not a PNG file (or truncated header): {path}")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height), head[24], head[25]


def png_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, without decoding the pixels."""
    return png_header(path)[:2]


def decode(path: str | Path, mode: ImageReadMode = ImageReadMode.UNCHANGED) -> torch.Tensor:
    """``(C, H, W)`` tensor (uint8, or uint16 for 16-bit PNGs); errors name the file."""
    path = Path(path)
    try:
        data = read_file(str(path))
        return decode_png(data, mode)
    except RuntimeError as err:
        raise CorruptImageError(
            f"cannot decode {path}: {err}. The file is probably truncated or damaged; "
            "extract it again from the downloaded archive."
        ) from err


def read_rgb(path: str | Path) -> torch.Tensor:
    """``(3, H, W)`` uint8 RGB (a palette, grey or alpha channel is converted away)."""
    image = decode(path, ImageReadMode.RGB)
    if image.dtype != torch.uint8:  # torchvision keeps 16 bits; they would pass as 0..65535
        raise BitDepthError(
            f"{path}: a 16-bit PNG where an 8-bit image is expected; is this the right file "
            "(e.g. not a SYNTHIA GT/LABELS file in an image folder)?"
        )
    return image


def read_label(path: str | Path) -> torch.Tensor:
    """``(H, W)`` uint8 single-channel label (a converted train-id PNG)."""
    img = decode(path, ImageReadMode.UNCHANGED)
    if img.shape[0] != 1 or img.dtype != torch.uint8:
        raise LabelValueError(
            f"{path}: expected a single-channel 8-bit train-id PNG, got {img.shape[0]} channel(s) "
            f"of {img.dtype}; was the prepare step run?"
        )
    return img[0]


def write_label_png(path: str | Path, label: np.ndarray) -> None:
    """Save a uint8 (H, W) label as a grey PNG, atomically (a half-written file never stays)."""
    image = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8), mode="L")
    # Not synced one by one: a preparation writes thousands of labels. After a crash the old
    # file or the new one is there either way; only a power loss can leave an empty one.
    io.write_atomic(path, lambda f: image.save(f, format="PNG"), size_hint=label.size, sync=False)


# ---------------------------------------------------------------------------- pre-processing


def pil_nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices PIL's ``NEAREST`` resize picks (it steps ``n_in/n_out`` from half a step)."""
    step = n_in / n_out
    steps = np.full(n_out, step)
    steps[0] = step * 0.5
    return np.minimum(np.cumsum(steps).astype(np.int64), n_in - 1)


def resize_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an ``(H, W)`` label to ``size`` (W, H), identical to PIL's."""
    w, h = size
    if label.shape == (h, w):
        return label
    ys = torch.from_numpy(pil_nearest_indices(label.shape[0], h))
    xs = torch.from_numpy(pil_nearest_indices(label.shape[1], w))
    return label.index_select(0, ys).index_select(1, xs)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a ``(3, H, W)`` uint8 image to ``size`` (W, H) with PIL (official)."""
    w, h = size
    if image.shape[1:] == (h, w):
        return image
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    out = np.asarray(pil.resize((w, h), Image.BICUBIC))
    return torch.from_numpy(out.copy()).permute(2, 0, 1)


def normalize(image: torch.Tensor, normalization: str = "caffe") -> torch.Tensor:
    """uint8 RGB ``(3, H, W)`` -> float32 network input.

    ``caffe``: BGR channel order, 0..255 minus ``CAFFE_MEAN_BGR``. ``imagenet``: RGB / 255, minus
    mean, over std. :func:`segda.viz.to_display` is the inverse, for pictures.
    """
    x = image.to(torch.float32)
    if normalization == "caffe":
        mean = torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32).view(3, 1, 1)
        return x.flip(0) - mean
    if normalization == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
        return (x / 255.0 - mean) / std
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


_VALID_TRAIN_IDS = torch.zeros(256, dtype=torch.bool)
_VALID_TRAIN_IDS[:NUM_CLASSES] = True
_VALID_TRAIN_IDS[IGNORE_INDEX] = True


def check_train_ids(label: torch.Tensor, path: str | Path, fix: str) -> None:
    """Raise if a uint8 train-id label holds anything but 0..18 and 255; ``fix`` is the
    prepare command the message recommends."""
    if not bool(_VALID_TRAIN_IDS[label.long()].all()):
        bad = sorted(set(torch.unique(label).tolist()) - set(range(NUM_CLASSES)) - {IGNORE_INDEX})
        raise LabelValueError(
            f"{path}: label values {bad} are not train ids (0..{NUM_CLASSES - 1}, "
            f"{IGNORE_INDEX} = ignore). Was it converted? Re-run: {fix}"
        )


def flip_decision(seed: int, index: int, draw: int | None) -> bool:
    """Deterministic coin for the random mirror: a pure function of (seed, index, draw)."""
    key = [0x5E6DA, seed, index] + ([] if draw is None else [draw])
    return bool(np.random.SeedSequence(key).generate_state(1)[0] & 1)


def read_report(root: Path) -> dict | None:
    path = root / REPORT_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_report(root: Path, report: dict) -> Path:
    return io.write_text_atomic(root / REPORT_NAME, json.dumps(report, indent=2, sort_keys=True) + "\n")


def run_conversions(convert_one: Callable[[Any], dict], jobs: list, workers: int = 1,
                    chunksize: int = 32) -> list[dict]:
    """``[convert_one(job) for job in jobs]``, in ``workers`` processes when more than one.

    The prepare step of every dataset is such a loop (one label file per job, each returning
    what the report records about it); ``convert_one`` must be a module-level function so that
    worker processes can import it.
    """
    if workers > 1 and len(jobs) > 1:
        with Pool(workers) as pool:
            return pool.map(convert_one, jobs, chunksize=chunksize)
    return [convert_one(job) for job in jobs]


# ----------------------------------------------------------------------------------- dataset


class SegmentationFiles(Dataset):
    """A list of (image, train-id label) files with the official pre-processing.

    Items are dicts ``{"image": float32 (3, H, W), "label": int64 (H, W), "index": int,
    "name": str}``; ``"label"`` is absent when the dataset has no labels. ``size`` is (W, H) for
    the image; ``label_size`` is ``"image"`` (same as the image), ``None`` (original
    resolution) or a (W, H) pair. ``flip`` mirrors image and label horizontally on a coin that
    depends only on ``(flip_seed, index, draw)``; ``draw`` is the sampler position when the
    loader passes ``(index, draw)`` keys (see :mod:`segda.data.loaders`), so resumed runs see the
    same flips. Subclasses fill ``self.images``, ``self.labels`` and ``self.names``.
    """

    dataset_name = "dataset"
    prepare_command = ""  # the dataset module's PREPARE_COMMAND, for error messages
    keyed_flip = True  # __getitem__ accepts (index, draw) pairs

    def __init__(
        self,
        root: Path,
        images: Sequence[Path],
        labels: Sequence[Path] | None,
        names: Sequence[str],
        size: tuple[int, int] | None,
        label_size: tuple[int, int] | str | None = "image",
        normalization: str = "caffe",
        flip: bool = False,
        flip_seed: int = 0,
        check_labels: bool = True,
    ) -> None:
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if isinstance(label_size, str) and label_size != "image":
            raise ValueError(f"label_size must be 'image', None or (W, H); got {label_size!r}")
        self.root = root
        self.images = list(images)
        self.labels = None if labels is None else list(labels)
        self.names = list(names)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.label_size = label_size
        self.normalization = normalization
        self.flip = flip
        self.flip_seed = flip_seed
        self.check_labels = check_labels
        self._report_counts: dict | None = None  # read from the prepare report on first use

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def prepare_hint(self) -> str:
        return self.prepare_command.format(root=self.root)

    def is_flipped(self, index: int, draw: int | None = None) -> bool:
        return self.flip and flip_decision(self.flip_seed, index, draw)

    def _label_target_size(self, image_hw: tuple[int, int]) -> tuple[int, int] | None:
        if self.label_size == "image":
            return self.size if self.size is not None else (image_hw[1], image_hw[0])
        return self.label_size

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, draw = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        image = read_rgb(self.images[index])
        orig_hw = (int(image.shape[1]), int(image.shape[2]))
        if self.size is not None:
            image = resize_image(image, self.size)
        item = {"index": index, "name": self.names[index]}
        flipped = self.is_flipped(index, draw)
        if self.labels is not None:
            path = self.labels[index]
            label = read_label(path)
            if tuple(label.shape) != orig_hw:
                raise SizeMismatchError(
                    f"{path} is {label.shape[1]}x{label.shape[0]} but its image "
                    f"{self.images[index]} is {orig_hw[1]}x{orig_hw[0]}. Re-run: "
                    f"{self.prepare_hint()}"
                )
            if self.check_labels:
                check_train_ids(label, path, self.prepare_hint())
            target = self._label_target_size(orig_hw)
            if target is not None:
                label = resize_label(label, target)
            if flipped:
                label = label.flip(-1)
            item["label"] = label.to(torch.int64)
        if flipped:
            image = image.flip(-1)
        item["image"] = normalize(image, self.normalization)
        return item

    def class_counts(self, index: int) -> np.ndarray:
        """Pixels of each of the 19 classes in label ``index`` at its file's resolution, ``(19,)``.

        The data source :func:`segda.data.stats.class_frequencies` reads (ADVENT's class-ratio
        prior): the count the prepare step recorded in its report when there is one for this
        file, otherwise counted from the label file (slow on a full dataset).
        """
        if self.labels is None:
            raise DatasetError(f"{self.dataset_name} has no labels to count")
        if self._report_counts is None:
            self._report_counts = (read_report(self.root) or {}).get("class_pixels", {})
        counted = self._report_counts.get(self.names[index])
        if counted is not None:
            return np.asarray(counted, dtype=np.int64)
        return label_class_counts(read_label(self.labels[index]).numpy())
