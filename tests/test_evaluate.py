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
    out = evaluate.Predictor(device="cpu", weights=(0.5, 0.5)).logits([ma, mb], x, (4, 5))
    up = lambda t: F.interpolate(t, size=(4, 5), mode="bilinear", align_corners=True)  # noqa: E731
    torch.testing.assert_close(out, 0.5 * up(a) + 0.5 * up(b))
    probs = evaluate.Predictor(device="cpu", weights=(0.3, 0.7), combine="probs").logits(
        [ma, mb], x, (4, 5))
    torch.testing.assert_close(probs, 0.3 * up(a).softmax(1) + 0.7 * up(b).softmax(1))


def test_align_corners_true_keeps_corner_values():
    logits = torch.arange(4.0).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    out = evaluate.Predictor(device="cpu").logits(ConstantLogits(logits), torch.zeros(1, 3, 2, 2),
                                                  (5, 5))
    assert out[0, 0, 0, 0] == 0 and out[0, 0, -1, -1] == 3 and out[0, 0, 0, -1] == 1


def test_align_corners_false_follows_the_half_pixel_rule():
    # Row [0, 1] upsampled to 4 columns: output column j samples (j + 0.5) / 2 - 0.5 of the
    # input, clamped at 0: -0.25 -> 0, 0.25, 0.75, 1.25 -> 1; align_corners=True: j / 3.
    logits = torch.tensor([[[[0.0, 1.0]]]])
    model, x = ConstantLogits(logits), torch.zeros(1, 3, 1, 2)
    half = evaluate.Predictor(device="cpu", num_classes=1, align_corners=False).logits(model, x, (1, 4))
    torch.testing.assert_close(half[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    corners = evaluate.Predictor(device="cpu", num_classes=1).logits(model, x, (1, 4))
    torch.testing.assert_close(corners[0, 0, 0], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))


def test_predictor_from_config_carries_the_runs_prediction_settings():
    from segda import config

    cfg = config.load("embedded/advent", {"run.align_corners": False, "run.amp": True,
                                          "run.device": "cpu", "model.num_classes": 7})
    spec = evaluate.Predictor.from_config(cfg)
    assert (spec.align_corners, spec.amp, spec.num_classes, spec.device) == (
        False, True, 7, torch.device("cpu"))
    official = evaluate.Predictor(device="cpu")
    assert (official.align_corners, official.amp, official.combine) == (True, False, "logits")
    with pytest.raises(evaluate.EvaluationError, match=r"run.align_corners: a: False, b: True"):
        evaluate.Predictor.for_runs([cfg, cfg.replace({"run.align_corners": True})], ["a", "b"])
    assert evaluate.Predictor.for_runs([cfg, cfg], weights=(1, 3)).weights == (1.0, 3.0)


@pytest.mark.parametrize("weights", [(-0.5, -0.5), (0.0, 0.0), (1.0, 0.0), (1.0, float("nan"))])
def test_non_positive_ensemble_weights_are_refused(weights):
    with pytest.raises(evaluate.EvaluationError, match="weights must be positive"):
        evaluate.Predictor(device="cpu", weights=weights)


def test_one_weight_per_model_is_checked_before_predicting():
    model = ConstantLogits(torch.zeros(1, 2, 1, 2))
    data = ListDataset([{"image": torch.zeros(3, 4, 8), "label": torch.zeros(4, 8).long()}])
    with pytest.raises(evaluate.EvaluationError, match=r"2 model\(s\) but 1 weight"):
        evaluate.evaluate([model, model], data, device="cpu", num_classes=2, weights=(0.5,))
    assert model.seen_training == []


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
