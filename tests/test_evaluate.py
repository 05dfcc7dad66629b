"""Evaluation: upsampling protocol, ensembles, mode handling."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segda import evaluate
from segda.models.outputs import SegOutput


class ConstantLogits(nn.Module):
    """Returns fixed logits (at a quarter of the input size) whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", logits)
        self.seen_training = []

    def forward(self, x):
        self.seen_training.append(self.training)
        main = self.logits.expand(x.shape[0], -1, -1, -1)
        return SegOutput(main=main, aux=None, features=main, aux_features=main)


class ListDataset:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_logit_ensemble_is_weighted_sum_of_upsampled_main_logits():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 3, 2, 3, generator=g), torch.randn(1, 3, 2, 3, generator=g)
    ma, mb = ConstantLogits(a), ConstantLogits(b)
    x = torch.zeros(1, 3, 8, 12)
    out = evaluate.predict_logits([ma, mb], x, (4, 5), weights=[0.5, 0.5])
    up = lambda t: F.interpolate(t, size=(4, 5), mode="bilinear", align_corners=True)  # noqa: E731
    torch.testing.assert_close(out, 0.5 * up(a) + 0.5 * up(b))
    probs = evaluate.predict_logits([ma, mb], x, (4, 5), weights=[0.3, 0.7], combine="probs")
    torch.testing.assert_close(probs, 0.3 * up(a).softmax(1) + 0.7 * up(b).softmax(1))


def test_align_corners_true_keeps_corner_values():
    logits = torch.arange(4.0).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    out = evaluate.predict_logits(ConstantLogits(logits), torch.zeros(1, 3, 2, 2), (5, 5))
    assert out[0, 0, 0, 0] == 0 and out[0, 0, -1, -1] == 3 and out[0, 0, 0, -1] == 1


def test_evaluate_counts_pixels_at_label_resolution_and_restores_mode():
    # Class 1 wins on the left column, class 0 on the right -> upsampled argmax is a split.
    logits = torch.tensor([[[[0.0, 5.0]], [[5.0, 0.0]]]])  # (1, 2, 1, 2)
    model = ConstantLogits(logits)
    model.train()
    label = torch.tensor([[1, 1, 0, 0], [1, 255, 0, 1]])
    data = ListDataset([{"image": torch.zeros(3, 4, 8), "label": label}] * 2)
    res = evaluate.evaluate(model, data, device="cpu", num_classes=2)
    # Upsampled with align_corners=True, columns 0-1 predict class 1 and columns 2-3 class 0.
    # Per image: gt 0 -> pred 0 three times; gt 1 -> pred 1 three times, -> pred 0 once
    # (bottom-right); the 255 pixel is not counted. Two identical images double the counts.
    expected = np.array([[6, 0], [2, 6]])
    assert np.array_equal(res.confusion.numpy(), expected)
    assert res.iou[0] == pytest.approx(6 / 8) and res.iou[1] == pytest.approx(6 / 8)
    assert model.seen_training == [False] and model.training


def test_predicted_class_shares_and_mean_entropy_by_hand():
    # Columns 0-1 predict class 1, columns 2-3 class 0 (see the test above); uniform logits
    # give entropy 1, and the split map's entropy is computed independently below.
    logits = torch.tensor([[[[0.0, 5.0]], [[5.0, 0.0]]]])
    model = ConstantLogits(logits)
    model.train()
    data = ListDataset([{"image": torch.zeros(3, 4, 8)}] * 3)
    shares = evaluate.predicted_class_shares(model, data, device="cpu", num_classes=2, batch_size=2)
    np.testing.assert_allclose(shares, [0.5, 0.5])
    up = F.interpolate(logits, size=(4, 8), mode="bilinear", align_corners=True).softmax(1)
    expected = float(-(up * up.log2()).sum(1).mean())  # log2(C) = 1 for two classes
    got = evaluate.mean_entropy(model, data, device="cpu", batch_size=2)
    assert got == pytest.approx(expected, rel=1e-5)
    assert evaluate.mean_entropy(ConstantLogits(torch.zeros(1, 2, 1, 2)), data, device="cpu") == (
        pytest.approx(1.0)
    )
    assert model.training and all(mode is False for mode in model.seen_training)
