"""Dataset statistics for looking at a domain gap: class shares, colours, average layouts."""

from __future__ import annotations

import numpy as np

from segda.labels import NUM_CLASSES


def label_class_counts(label) -> np.ndarray:
    """Pixels of each train id 0..18 in one label map, ``(19,)`` int64.

    Ignore (255) and any other value outside 0..18 is not counted. ``label`` is any array-like
    of non-negative integers (uint8 label PNG, int64 tensor on the CPU, ...).
    """
    flat = np.asarray(label).ravel()
    return np.bincount(flat, minlength=NUM_CLASSES)[:NUM_CLASSES].astype(np.int64)


def class_frequencies(dataset, max_items: int | None = None) -> np.ndarray:
    """Pixel share of each of the 19 classes over a dataset's labels (ignore excluded), ``(19,)``.

    The one place a class frequency is computed (notebooks' class-share plots, ADVENT's
    class-ratio prior). Per-item pixel counts come from the dataset's ``class_counts(index)``
    when it has one, a cheaper source than decoding the item (the prepare report of the real
    datasets, label-only rendering of the embedded one); otherwise from ``dataset[i]["label"]``.
    ``max_items`` limits the count to the first items (None: every item; 0 is refused, as
    :func:`segda.evaluate.check_max_images` refuses it, since no item gives no frequency).
    """
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be at least 1 (None: every item), got {max_items}")
    n = len(dataset) if max_items is None else min(max_items, len(dataset))
    per_item = getattr(dataset, "class_counts", None)
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for i in range(n):
        counts += per_item(i) if per_item is not None else label_class_counts(dataset[i]["label"])
    return counts / max(int(counts.sum()), 1)


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
