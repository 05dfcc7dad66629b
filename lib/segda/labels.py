"""Cityscapes' 19 training classes: names, colours, the ignore label, and evaluation subsets.

The class order is the train-id order used by every table in the AdaptSegNet and ADVENT
papers (road ... bicycle). The colours are the Cityscapes palette. The label-id -> train-id
mapping is the one the official repositories apply to GTA5 and Cityscapes labels
(ids 7, 8, 11, ... 33 -> train ids 0..18, everything else ignored).
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
NUM_CLASSES = 19

CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus",
    "train", "motorcycle", "bicycle",
)

PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
IGNORE_COLOUR = (0, 0, 0)

# Cityscapes label id -> train id, as in the official GTA5/Cityscapes loaders.
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

# SYNTHIA -> Cityscapes protocols (train ids kept). 16 classes: no terrain, truck, train.
# 13 classes: additionally no wall, fence, pole (AdaptSegNet's protocol; ADVENT's mIoU*).
CLASSES_16: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
CLASSES_13: tuple[int, ...] = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
CLASS_SUBSETS: dict[int, tuple[int, ...]] = {
    19: tuple(range(NUM_CLASSES)), 16: CLASSES_16, 13: CLASSES_13,
}


def label_id_lut() -> np.ndarray:
    """A 256-entry uint8 lookup table mapping Cityscapes label ids to train ids (255 = ignore)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


def palette_array() -> np.ndarray:
    """A (256, 3) uint8 colour table: train ids 0..18 in their colours, everything else black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: NUM_CLASSES] = np.asarray(PALETTE, dtype=np.uint8)
    table[NUM_CLASSES:] = IGNORE_COLOUR
    return table
