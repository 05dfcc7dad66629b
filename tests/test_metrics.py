"""IoU and mIoU on hand-built confusion matrices."""

import math

import numpy as np
import pytest
import torch

from segda import metrics


def test_confusion_matrix_counts_and_ignores_255():
    gt = torch.tensor([[0, 0, 1, 255], [2, 1, 1, 0]])
    pred = torch.tensor([[0, 1, 1, 2], [2, 2, 1, 0]])
    m = metrics.confusion_matrix(pred, gt, 3)
    expected = torch.tensor([[2, 1, 0], [0, 2, 1], [0, 0, 1]])
    assert torch.equal(m, expected)


def test_iou_hand_computed_with_absent_class():
    # class 0: inter 2, row 3, col 2 -> 2/3; class 1: 2/(3+3-2)=0.5; class 2: 1/(1+1-0...)
    m = np.array([[2, 1, 0, 0], [0, 2, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    iou = metrics.per_class_iou(m)
    assert iou[0] == pytest.approx(2 / 3)
    assert iou[1] == pytest.approx(2 / 4)
    assert iou[2] == pytest.approx(1 / 2)
    assert math.isnan(iou[3])  # never in gt nor prediction
    assert metrics.mean_iou(iou) == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)


def test_class_predicted_but_absent_from_gt_has_zero_iou():
    m = np.array([[3, 1], [0, 0]])
    iou = metrics.per_class_iou(m)
    assert iou[1] == 0.0 and iou[0] == pytest.approx(0.75)
    assert metrics.mean_iou(iou) == pytest.approx(0.375)


def test_subset_miou_and_accumulation():
    cm = metrics.ConfusionMatrix(19)
    gt = torch.arange(19).repeat(2)
    pred = gt.clone()
    pred[:3] = 5  # classes 0, 1, 2 wrong once each
    cm.update(pred[:19], gt[:19])
    cm.update(pred[19:], gt[19:])
    iou = cm.iou()
    assert iou[0] == pytest.approx(1 / 2)
    assert iou[5] == pytest.approx(2 / 5)
    assert iou[10] == 1.0
    from segda.labels import CLASSES_13

    expected13 = np.mean([iou[c] for c in CLASSES_13])
    assert cm.miou(13) == pytest.approx(expected13)
    assert cm.pixel_accuracy() == pytest.approx(35 / 38)


def test_iou_table_and_text():
    iou = np.full(19, np.nan)
    iou[0], iou[1] = 0.5, 1.0
    df = metrics.iou_table({"run": iou})
    assert df.loc["run", "mIoU"] == pytest.approx(75.0)
    text = metrics.format_iou_table(df)
    assert "| run | 50.0 | 100.0 | -" in text
