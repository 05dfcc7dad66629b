"""SYNTHIA-RAND-CITYSCAPES (Ros et al., CVPR 2016): the second source domain.

Layout: ``<root>/RGB/NNNNNNN.png`` (1280x760 RGB) and ``<root>/GT/LABELS/NNNNNNN.png``, 9,400
pairs. The label PNGs are **16-bit, multi-channel**: the first channel holds the SYNTHIA class
id, the second an instance id. PIL reads such files as 8-bit RGB and silently drops the high
byte, which is why users fall back to the colour labels (AdaptSegNet#31); this module decodes
them with ``torchvision.io.decode_png(..., ImageReadMode.UNCHANGED)``, which keeps 16 bits.

Neither official repository has SYNTHIA code. The SYNTHIA -> Cityscapes train-id mapping below
is the one the community uses, as written in DAFormer's ``tools/convert_datasets/synthia.py``
(lhoyer/DAFormer, "mapping based on README.txt from SYNTHIA_RAND_CITYSCAPES"): SYNTHIA's ids for
terrain (16), truck (18) and train (20) are mapped too but do not occur in the data, which is why
results are reported on 16 classes (ADVENT) or 13 (AdaptSegNet; ADVENT's mIoU*), see
``segda.labels.CLASS_SUBSETS``. ``SYNTHIA(..., classes=16)`` additionally sets labels outside
the chosen protocol to ignore; train ids stay in the 19-class numbering either way.

Here: the :data:`LAYOUT` (:mod:`segda.data.layout` opens, prepares and checks it), the dataset,
:func:`prepare` (``data_scripts/prepare_synthia.py``) and :func:`check` (the doctor).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch

from segda.data import layout, real
from segda.data.checks import Finding
from segda.labels import CLASS_SUBSETS, IGNORE_INDEX

NAME = "synthia"
SPLITS = ("train",)  # one list (no official one exists; every RGB/*.png by default)
SYNTHIA_COUNT = 9400
PREPARE_COMMAND = "python data_scripts/prepare_synthia.py --root {root}"
NATIVE_SIZE = (1280, 760)
LABEL_SUFFIX = "_labelTrainIds.png"
MAX_SYNTHIA_ID = 22

# SYNTHIA class ids (README.txt of SYNTHIA-RAND-CITYSCAPES), for messages and reports.
SYNTHIA_CLASSES = {
    0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation",
    7: "pole", 8: "car", 9: "traffic sign", 10: "pedestrian", 11: "bicycle", 12: "motorcycle",
    13: "parking-slot", 14: "road-work", 15: "traffic light", 16: "terrain", 17: "rider",
    18: "truck", 19: "bus", 20: "train", 21: "wall", 22: "lanemarking",
}
# SYNTHIA id -> Cityscapes train id (DAFormer's table); every other id -> 255.
SYNTHIA_TO_TRAIN_ID = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
    8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}
LAYOUT = layout.Layout(
    name=NAME, title="SYNTHIA", prepare_command=PREPARE_COMMAND, splits=SPLITS,
    images="RGB", labels="GT/LABELS", image_suffix=".png", source_suffix=".png",
    train_id_suffix=LABEL_SUFFIX, pattern=re.compile(r"^\d+\.png$"), source_depth="label16",
    official=None, count=lambda split: SYNTHIA_COUNT,
    download="extract SYNTHIA_RAND_CITYSCAPES into {root} (RGB/ and GT/LABELS/)",
)


@lru_cache(maxsize=1)
def synthia_lut() -> np.ndarray:
    lut = np.full(65536, IGNORE_INDEX, dtype=np.uint8)  # labels are 16-bit
    for sid, tid in SYNTHIA_TO_TRAIN_ID.items():
        lut[sid] = tid
    return lut


def read_synthia_ids(path: str | Path) -> np.ndarray:
    """SYNTHIA class ids (first channel of the 16-bit label PNG) as an (H, W) int array."""
    raw = real.decode(path)  # (C, H, W), uint16 for the real files
    return raw[0].to(torch.int32).numpy()


train_id_name = LAYOUT.train_id_name


class SYNTHIA(layout.LayoutDataset):
    """SYNTHIA-RAND-CITYSCAPES images with converted train-id labels.

    ``ids=None`` takes every ``RGB/*.png`` and requires all 9,400; pass names, or
    ``list_file`` (one name per line, e.g. ``0000000.png``), for a subset.
    ``size=None`` (default) keeps the native 1280x760 (no resize). ``classes`` (19, 16 or 13) sets labels
    outside that protocol's classes to ignore.
    """

    layout = LAYOUT

    def __init__(self, root: str | Path, size: tuple[int, int] | None = None,
                 label_size: tuple[int, int] | str | None = "image", normalization: str = "caffe",
                 flip: bool = False, flip_seed: int = 0, ids: Sequence[str] | None = None, classes: int = 19,
                 check_labels: bool = True, list_file: str | Path | None = None) -> None:
        if classes not in CLASS_SUBSETS:
            raise ValueError(f"classes must be one of {sorted(CLASS_SUBSETS)}, got {classes}")
        self.classes = classes
        self._keep = torch.zeros(256, dtype=torch.bool)
        self._keep[list(CLASS_SUBSETS[classes])] = True
        super().__init__(root, "train", ids, list_file, "ids", size=size, label_size=label_size,
                         normalization=normalization, flip=flip, flip_seed=flip_seed,
                         check_labels=check_labels)

    def __getitem__(self, key):
        item = super().__getitem__(key)
        if self.classes != 19 and "label" in item:
            label = item["label"]
            item["label"] = torch.where(self._keep[label], label, IGNORE_INDEX)
        return item

    def class_counts(self, index: int) -> np.ndarray:
        """As the base class, with the classes outside the protocol not counted (they are
        ignore in this dataset's labels)."""
        counts = super().class_counts(index)
        return np.where(self._keep[: len(counts)].numpy(), counts, 0)


# ------------------------------------------------------------------------------- preparation


def _convert_one(job: layout.Conversion, strict: bool) -> dict:
    ids = read_synthia_ids(job.source)
    entry = layout.new_entry(job, ids, MAX_SYNTHIA_ID, strict, "SYNTHIA class",
                             " (is the class id really in the first channel?)")
    return layout.write_train_ids(entry, job.out, synthia_lut()[np.clip(ids, 0, 65535)])


def prepare(root: str | Path, overwrite: bool = False, strict_ids: bool = False, allow_partial: bool = False,
            workers: int = 1, lists: Mapping[str, str | Path] | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Verify counts, convert the 16-bit labels to train-id PNGs, write the JSON report.

    ``lists={"train": FILE}`` converts only the pairs a list file names (one name per line),
    each of which must be present, instead of checking the official count.
    """
    root, list_file, found, report, entries = layout.prepare_list(
        LAYOUT, root, lists, partial(_convert_one, strict=strict_ids), allow_partial, overwrite,
        workers, log)
    images, labels = found.image_files, {n for n in found.label_files if LAYOUT.pattern.match(n)}
    report.update({
        "dataset": "synthia",
        "official_count": SYNTHIA_COUNT,
        "counts": {"images": len(images), "labels": len(labels)},
        "unpaired": sorted(images ^ labels),
        "mapping": {str(k): v for k, v in SYNTHIA_TO_TRAIN_ID.items()},
        "mapping_source": "lhoyer/DAFormer tools/convert_datasets/synthia.py",
        "class_pixels": {n: e["class_pixels"] for n, e in entries.items()},
        "unknown_label_ids": {n: e["unknown_ids"] for n, e in entries.items() if "unknown_ids" in e},
    })
    layout.finish_report(root, report, list_file, log)
    return report


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``data_scripts/prepare_synthia.py`` beyond the shared ones."""
    parser.add_argument("--strict-ids", action="store_true",
                        help="fail on class ids > 22 instead of mapping them to ignore")


# ------------------------------------------------------------------------------------ checks


def check(root: Path, lists: Mapping[str, str | Path] | None = None,
          full: bool = False) -> list[Finding]:
    """What the doctor reports about a SYNTHIA folder: counts (official, or of the list file
    ``lists["train"]``), conversion, label bit depth, image size, decoding (of the first pair,
    or with ``full`` of every file, each bad one named)."""
    found, list_file, what, out = layout.check_counts(LAYOUT, root, lists)
    if found is None:
        return out
    images = [n for n in found.names if n in found.images]
    labels = [n for n in found.names if n in found.sources]
    todo = [n for n in labels if n not in found.converted]
    out += layout.conversion_findings("train-id labels", len(labels) - len(todo), todo,
                                      LAYOUT.hint(root, list_file))
    if full:
        out += layout.decode_findings(LAYOUT, root, "train", found, what)
    elif labels:
        try:
            raw = real.decode(LAYOUT.folder(root, "labels", "train") / labels[0])
            if raw.dtype.itemsize == 1:
                out.append(Finding("warn", f"{labels[0]} is 8-bit; SYNTHIA's GT/LABELS are 16-bit "
                                   "(is this the GT/COLOR folder?)", LAYOUT.download.format(root=root)))
            else:
                out.append(Finding("ok", f"{labels[0]}: {raw.shape[0]} channels, 16-bit"))
        except real.DatasetError as err:
            out.append(Finding("problem", str(err), "extract the file again"))
    if not full:
        out += layout.first_decodes(LAYOUT, root, "train", found, train_id=False)
    if images:
        try:
            w, h = real.png_size(root / "RGB" / images[0])
            if (w, h) != NATIVE_SIZE:
                out.append(Finding("warn", f"{images[0]} is {w}x{h}, SYNTHIA-RAND-CITYSCAPES "
                                   f"images are {NATIVE_SIZE[0]}x{NATIVE_SIZE[1]}"))
        except real.DatasetError as err:
            out.append(Finding("problem", str(err)))
    return out
