"""Dataset statistics for looking at a domain gap: class shares, colours, average layouts."""

from __future__ import annotations

import numpy as np

from segda.labels import IGNORE_INDEX, NUM_CLASSES


def _indices(dataset, max_items: int | None) -> range:
    return range(len(dataset) if max_items is None else min(max_items, len(dataset)))


def class_frequencies(dataset, max_items: int | None = None) -> np.ndarray:
    """Pixel share of each of the 19 classes over the labels (ignore excluded), ``(19,)``."""
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for i in _indices(dataset, max_items):
        label = np.asarray(dataset[i]["label"]).ravel()
        counts += np.bincount(label[label != IGNORE_INDEX], minlength=256)[:NUM_CLASSES]
    return counts / max(counts.sum(), 1)


def mean_colour_per_class(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean RGB of each class's pixels, ``(19, 3)`` (NaN for absent classes).

    Shape: images ``(N, H, W, 3)`` in [0, 1], labels ``(N, H, W)``.
    """
    out = np.full((NUM_CLASSES, 3), np.nan)
    flat_img = images.reshape(-1, 3)
    flat_lab = labels.reshape(-1)
    for c in range(NUM_CLASSES):
        mask = flat_lab == c
        if mask.any():
            out[c] = flat_img[mask].mean(0)
    return out


def average_label_map(labels: np.ndarray) -> np.ndarray:
    """Per-pixel class frequency over a stack of label maps, ``(19, H, W)``.

    Its argmax is the domain's "average scene": the spatial layout prior that output-space
    adaptation relies on (sky above, road below, ...).
    """
    n, h, w = labels.shape
    freq = np.zeros((NUM_CLASSES, h, w))
    for c in range(NUM_CLASSES):
        freq[c] = (labels == c).mean(0)
    return freq


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and standard deviation per RGB channel over ``(N, H, W, 3)`` images in [0, 1]."""
    return {"mean": images.reshape(-1, 3).mean(0), "std": images.reshape(-1, 3).std(0)}
