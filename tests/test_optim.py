"""Optimizer groups (incl. the official duplicated-parameter quirk) and the poly schedule."""

import collections

import pytest
import torch

from segda import config, optim
from segda.models import build_segmenter


def _multiplicity(model):
    """Count, independently of segda.optim, how often the official walk lists each tensor:
    once per module on the path from a backbone root down to the tensor's owner."""
    counts = collections.Counter()
    for root in model.backbone_roots():
        for module in root.modules():
            for p in module.parameters():
                if p.requires_grad:
                    counts[id(p)] += 1
    return counts


def test_official_groups_list_tensors_once_per_ancestor():
    model = build_segmenter("small")
    listed = list(optim.official_backbone_params(model))
    counts = _multiplicity(model)
    assert len(listed) == sum(counts.values())
    # layer2.0.conv1.weight sits under layer2 -> layer2.0 -> conv1: three listings
    assert counts[id(model.layer2[0].conv1.weight)] == 3
    # its downsample conv is one level deeper: four
    assert counts[id(model.layer2[0].downsample[0].weight)] == 4
    assert counts[id(model.conv1.weight)] == 1


@pytest.mark.parametrize("param_groups", ["official", "unique"])
def test_plain_sgd_step_scales_with_listing_count(param_groups):
    torch.manual_seed(0)
    model = build_segmenter("small")
    cfg = config.load(None, {"optim.param_groups": param_groups, "optim.momentum": 0.0,
                             "optim.weight_decay": 0.0, "optim.lr": 0.1}).optim
    opt = optim.build_segmenter_optimizer(model, cfg)
    counts = _multiplicity(model)
    params = {
        "stem": model.conv1.weight,
        "block": model.layer2[0].conv1.weight,
        "downsample": model.layer2[0].downsample[0].weight,
        "head": model.layer6.conv2d_list[0].weight,
    }
    before = {k: p.detach().clone() for k, p in params.items()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for name, p in params.items():
        if name == "head":
            expected_steps, lr = 1, 0.1 * cfg.head_lr_mult
        else:
            expected_steps, lr = (counts[id(p)] if param_groups == "official" else 1), 0.1
        torch.testing.assert_close(before[name] - p.detach(), torch.full_like(p, expected_steps * lr))


def test_poly_schedule_values_and_group_multipliers():
    assert optim.poly_lr(2.5e-4, 0, 250000, 0.9) == 2.5e-4
    assert optim.poly_lr(2.5e-4, 120000, 250000, 0.9) == pytest.approx(2.5e-4 * 0.52**0.9)
    assert optim.poly_lr(1.0, 150000, 250000, 0.9) == pytest.approx(0.4**0.9)  # 0.438
    model = build_segmenter("small")
    cfg = config.load("paper/advent").optim
    opt = optim.build_segmenter_optimizer(model, cfg)
    lr = optim.set_poly_lr(opt, cfg.lr, 125000, cfg)
    assert lr == pytest.approx(2.5e-4 * 0.5**0.9)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr)
    assert opt.param_groups[1]["lr"] == pytest.approx(10 * lr)
    disc = torch.nn.Conv2d(2, 1, 1)
    d_opt = optim.build_discriminator_optimizer(disc, cfg)
    assert d_opt.defaults["betas"] == (0.9, 0.99)
    assert optim.set_poly_lr(d_opt, cfg.lr_disc, 0, cfg) == 1e-4
