"""segda.adabn: the statistics of the given images replace the running statistics; nothing
else of the model changes, and the input model is left as it was."""

import pytest
import torch
from torch import nn

from segda import adabn


class Tiny(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN, with a frozen-BN ``train()`` like segda's models."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 1)
        self.bn2 = nn.BatchNorm2d(5)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in (self.bn1, self.bn2):  # as bn_mode="frozen": training leaves BN in eval mode
            m.eval()
        return self

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


def _model_and_images(n=6):
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():  # running statistics of "another domain", far from the images'
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-3, 3)
            bn.running_var.uniform_(4, 9)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    model.eval()
    images = torch.randn(n, 3, 8, 12) * 2 + 0.5
    return model, [{"image": im} for im in images], images


def test_adapted_copy_has_the_images_statistics_and_the_same_weights():
    model, dataset, images = _model_and_images()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = adabn.adapt_batch_norm(model, dataset, max_images=None, batch_size=len(dataset))

    # the expectation, by hand: channel mean and unbiased variance of conv1's output
    act = model.conv1(images).detach()
    expect_mean = act.mean(dim=(0, 2, 3))
    expect_var = act.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(adapted.bn1.running_mean, expect_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adapted.bn1.running_var, expect_var, rtol=1e-5, atol=1e-5)

    assert adabn.same_parameters(model, adapted)
    for (name, p), q in zip(model.named_parameters(), adapted.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not adapted.training and not adapted.bn1.training
    assert adapted.bn1.momentum == model.bn1.momentum == 0.1
    # the input model is unchanged, bit for bit
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_several_batches_average_the_batch_statistics():
    model, dataset, images = _model_and_images(n=6)
    adapted = adabn.adapt_batch_norm(model, dataset, max_images=4, batch_size=2)
    act = model.conv1(images[:4]).detach()
    halves = act.split(2)
    torch.testing.assert_close(adapted.bn1.running_mean, act.mean(dim=(0, 2, 3)),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adapted.bn1.running_var,
                               sum(h.var(dim=(0, 2, 3)) for h in halves) / 2, rtol=1e-5, atol=1e-5)
    assert int(adapted.bn1.num_batches_tracked) == 2


def test_compare_batch_norm_reports_moved_statistics_and_identical_weights():
    model, dataset, _ = _model_and_images()
    adapted = adabn.adapt_batch_norm(model, dataset, batch_size=3)
    table = adabn.compare_batch_norm(model, adapted)
    assert list(table.index) == ["bn1", "bn2"]
    assert table["weights identical"].all()
    assert (table["max |running_mean diff|"] > 0).all()
    assert (table["max |running_var ratio - 1|"] > 0).all()
    same = adabn.compare_batch_norm(model, model)
    assert (same["max |running_mean diff|"] == 0).all()
    assert (same["max |running_var ratio - 1|"] == 0).all()

    changed = adabn.adapt_batch_norm(model, dataset)
    with torch.no_grad():
        changed.conv2.weight.add_(1.0)
    assert not adabn.same_parameters(model, changed)


def test_empty_inputs_are_refused():
    model, dataset, _ = _model_and_images()
    with pytest.raises(ValueError, match="at least one image"):
        adabn.adapt_batch_norm(model, [], max_images=None)
    with pytest.raises(ValueError, match="no batch-norm layer"):
        adabn.adapt_batch_norm(nn.Conv2d(3, 3, 1), dataset)
