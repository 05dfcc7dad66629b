"""Confusion matrix, per-class IoU and mIoU, as in the official evaluation.

Rows are ground truth, columns are predictions; only pixels whose ground truth is a valid
class (``0 <= gt < num_classes``) are counted, so the ignore label (255) drops out. IoU of
class c is ``M[c, c] / (row_c + col_c - M[c, c])``; a class absent from both the ground truth
and the predictions has 0/0 = NaN and is skipped by the NaN-aware mean, as the official
``np.nanmean`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from segda.labels import CLASS_NAMES, CLASS_SUBSETS


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts of (gt, pred) pairs over valid pixels."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != label shape {tuple(gt.shape)}")
    gt = gt.reshape(-1).long()
    pred = pred.reshape(-1).long()
    valid = (gt >= 0) & (gt < num_classes)
    idx = gt[valid] * num_classes + pred[valid]
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_iou(conf: torch.Tensor | np.ndarray) -> np.ndarray:
    """IoU per class (float64, NaN where the class never occurs in gt or prediction)."""
    m = np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
    inter = np.diag(m)
    union = m.sum(0) + m.sum(1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def mean_iou(iou: np.ndarray, classes: Sequence[int] | None = None) -> float:
    """NaN-aware mean of ``iou`` over ``classes`` (all by default)."""
    values = iou if classes is None else iou[list(classes)]
    if np.all(np.isnan(values)):
        return float("nan")
    return float(np.nanmean(values))


class ConfusionMatrix:
    """Accumulates a confusion matrix on the device of the first update."""

    def __init__(self, num_classes: int = 19) -> None:
        self.num_classes = num_classes
        self.mat: torch.Tensor | None = None

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        m = confusion_matrix(pred, gt.to(pred.device), self.num_classes)
        self.mat = m if self.mat is None else self.mat + m

    @property
    def matrix(self) -> torch.Tensor:
        if self.mat is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        return self.mat

    def reduce_from_all_processes(self, device: torch.device | None = None) -> None:
        """Sum the matrix over the ranks of a data-parallel run (each rank counted its share
        of the images); without a process group this does nothing. ``device``: where the
        collective runs (the rank's device; a rank that saw no image has no matrix yet)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        total = self.matrix.to(device or self.matrix.device).clone()
        torch.distributed.all_reduce(total)
        self.mat = total

    def iou(self) -> np.ndarray:
        return per_class_iou(self.matrix)

    def miou(self, num_eval_classes: int | None = None) -> float:
        """mIoU over all classes, or over the 16/13-class SYNTHIA protocols."""
        classes = None if num_eval_classes is None else CLASS_SUBSETS[num_eval_classes]
        return mean_iou(self.iou(), classes)

    def pixel_accuracy(self) -> float:
        m = self.matrix.double()
        return float(m.diag().sum() / m.sum().clamp(min=1))


def iou_table(
    ious: dict[str, np.ndarray],
    class_names: Sequence[str] = CLASS_NAMES,
    classes: Sequence[int] | None = None,
):
    """A pandas DataFrame: one row per result, one column per class plus ``mIoU`` (in %)."""
    import pandas as pd

    classes = list(range(len(class_names))) if classes is None else list(classes)
    rows = {}
    for name, iou in ious.items():
        row = {class_names[c]: 100.0 * iou[c] for c in classes}
        row["mIoU"] = 100.0 * mean_iou(iou, classes)
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def format_iou_table(df, digits: int = 1) -> str:
    """Plain-text table (Markdown pipe format) of :func:`iou_table`'s output."""
    cols = ["result", *df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, row in df.iterrows():
        cells = ["-" if np.isnan(v) else f"{v:.{digits}f}" for v in row.to_numpy(dtype=float)]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)
