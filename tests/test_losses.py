"""Each loss against an independent computation on small hand-built tensors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segda import losses


def _official_cross_entropy_2d(logits, labels):
    """The official formulation written out with explicit loops (no masking tricks)."""
    total, count = 0.0, 0
    n, c, h, w = logits.shape
    for b in range(n):
        for i in range(h):
            for j in range(w):
                y = int(labels[b, i, j])
                if y == 255 or y < 0:
                    continue
                z = logits[b, :, i, j].double()
                total += float(torch.logsumexp(z, 0) - z[y])
                count += 1
    return total / count


def test_seg_cross_entropy_hand_computed():
    # Two pixels, two classes: logits (0, 0) label 0 -> log 2; logits (2, 0) label 1 -> log(1+e^2)
    logits = torch.tensor([[[[0.0, 2.0, 5.0]], [[0.0, 0.0, -5.0]]]])  # (1, 2, 1, 3)
    labels = torch.tensor([[[0, 1, 255]]])
    expected = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert losses.seg_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert losses.seg_cross_entropy_masked(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_seg_cross_entropy_matches_official_on_random_maps():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 6, generator=g)
    labels = torch.randint(0, 5, (2, 4, 6), generator=g)
    labels[0, 0, :3] = 255
    labels[1, 2, 2] = 255
    ref = _official_cross_entropy_2d(logits, labels)
    assert losses.seg_cross_entropy(logits, labels).item() == pytest.approx(ref, rel=1e-5)
    assert losses.seg_cross_entropy_masked(logits, labels).item() == pytest.approx(ref, rel=1e-5)


def test_seg_cross_entropy_gradients_equal_between_implementations():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1, 4, 3, 5, generator=g)
    labels = torch.randint(0, 4, (1, 3, 5), generator=g)
    labels[0, 1, 1] = 255
    a = base.clone().requires_grad_(True)
    b = base.clone().requires_grad_(True)
    losses.seg_cross_entropy(a, labels).backward()
    losses.seg_cross_entropy_masked(b, labels).backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.all(a.grad[0, :, 1, 1] == 0)  # ignored pixel gets no gradient


def test_weighted_self_information_official_formula():
    p = torch.tensor([0.5, 0.25, 0.25, 0.0]).view(1, 4, 1, 1)
    # -p log2 p / log2 4: 0.5*1/2, 0.25*2/2, 0.25*2/2, 0
    expected = torch.tensor([0.25, 0.25, 0.25, 0.0]).view(1, 4, 1, 1)
    torch.testing.assert_close(losses.weighted_self_information(p), expected)


def test_self_information_sums_to_normalised_entropy():
    g = torch.Generator().manual_seed(2)
    p = F.softmax(torch.randn(2, 19, 3, 4, generator=g), dim=1)
    ent = -(p * p.log()).sum(1) / math.log(19)
    torch.testing.assert_close(losses.weighted_self_information(p).sum(1), ent, rtol=1e-5, atol=1e-6)


def test_entropy_loss_uniform_one_hot_and_value():
    uniform = torch.full((1, 19, 2, 3), 1 / 19)
    assert losses.entropy_loss(uniform).item() == pytest.approx(1.0, rel=1e-6)
    one_hot = F.one_hot(torch.zeros(1, 2, 3, dtype=torch.long), 19).permute(0, 3, 1, 2).float()
    assert losses.entropy_loss(one_hot).item() == pytest.approx(0.0, abs=1e-12)
    # Two pixels of a 2-class map: (0.5, 0.5) has entropy 1 bit, (1, 0) has 0 -> mean 0.5 / log2(2)
    p = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]]]])
    assert losses.entropy_loss(p).item() == pytest.approx(0.5)


def test_class_ratio_prior_hand_computed():
    # One image, three classes, two pixels. Mean predicted distribution: (0.6, 0.3, 0.1)
    p = torch.tensor([[[[0.8, 0.4]], [[0.2, 0.4]], [[0.0, 0.2]]]])
    prior = torch.tensor([0.2, 0.2, 0.6])
    # mu = 0.5: floors (0.1, 0.1, 0.3); violations: max(0, 0.1-0.6)=0, max(0, 0.1-0.3)=0, 0.3-0.1
    assert losses.class_ratio_prior_loss(p, prior, mu=0.5).item() == pytest.approx(0.2)
    assert losses.class_ratio_prior_loss(p, prior, mu=0.1).item() == pytest.approx(0.0)


def test_gan_losses_against_formulas():
    d = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    sig = 1 / (1 + np.exp(-d.numpy()))
    bce_target = -np.log(sig).mean()
    bce_source = -np.log(1 - sig).mean()
    assert losses.gan_loss(d, losses.TARGET_DOMAIN).item() == pytest.approx(bce_target, rel=1e-6)
    assert losses.gan_loss(d, losses.SOURCE_DOMAIN).item() == pytest.approx(bce_source, rel=1e-6)
    ls = ((d.numpy() - 1.0) ** 2).mean()
    assert losses.gan_loss(d, 1.0, "lsgan").item() == pytest.approx(ls)
    with pytest.raises(ValueError, match="gan loss"):
        losses.gan_loss(d, 1.0, "wgan")


def test_domain_labels_follow_official_convention():
    assert losses.SOURCE_DOMAIN == 0.0 and losses.TARGET_DOMAIN == 1.0
