"""The benchmark switches: the discriminator's patch verdicts and the label shift setting."""

import numpy as np
import pytest
import torch

from segda import config
from segda.data import registry, stats, synthetic
from segda.models import build_discriminator
from segda.models.discriminators import FCDiscriminator


@pytest.mark.parametrize(("stride1", "expected"), [
    # 128x64 halved once per stride-2 convolution (5 of them officially): 4x2 verdicts;
    # each convolution moved to stride 1 keeps its input size, doubling the grid.
    (0, (2, 4)), (1, (4, 8)), (2, (8, 16)), (3, (16, 32)), (5, (64, 128)),
])
def test_patch_verdicts_at_128x64(stride1, expected):
    disc = build_discriminator("output", 19, ndf=4, stride1_layers=stride1)
    out = disc(torch.zeros(1, 19, 64, 128))
    assert tuple(out.shape) == (1, 1, *expected)


def test_patch_discriminator_keeps_the_official_keys():
    official = FCDiscriminator(19, ndf=4)
    patch = FCDiscriminator(19, ndf=4, stride1_layers=3)
    a, b = official.state_dict(), patch.state_dict()
    assert list(a) == list(b) == [f"{i}.{p}" for i in (0, 2, 4, 6, 8) for p in ("weight", "bias")]
    assert all(a[k].shape == b[k].shape for k in a)
    patch.load_state_dict(a)  # an official checkpoint loads unchanged


def test_patch_discriminator_rejects_bad_counts():
    with pytest.raises(ValueError, match="disc_patch_stride1"):
        FCDiscriminator(19, stride1_layers=6)
    with pytest.raises(ValueError, match="output-space discriminator only"):
        build_discriminator("feature", 32, stride1_layers=1)


def test_config_switches_default_to_the_official_setting():
    cfg = config.TrainConfig()
    assert cfg.data.balance_shift == 1.0 and cfg.method.disc_patch_stride1 == 0
    assert config.load("embedded/advent", {"method.disc_patch_stride1": 3}).method.disc_patch_stride1 == 3


def _target_shares(shift, n=60):
    cfg = config.load("embedded/source_only", {"data.balance_shift": shift})
    target = registry.build_datasets(cfg.data).train_target
    assert target.config.balance_shift == shift  # the registry passes it to the generator
    return stats.class_frequencies(target, n)


def test_balance_shift_moves_target_class_shares_and_not_the_source():
    none, half, full = (_target_shares(s) for s in (0.0, 0.5, 1.0))
    veg, building = synthetic.VEGETATION, synthetic.BUILDING
    # The generator's vegetation-block probability goes 0.25 -> 0.6 with the shift.
    assert none[veg] < half[veg] < full[veg]
    assert none[building] > half[building] > full[building]
    source = stats.class_frequencies(synthetic.SyntheticStreetScenes("source", "train"), 60)
    tv = [0.5 * np.abs(f - source).sum() for f in (none, half, full)]
    assert tv[0] < 0.05 < tv[1] < tv[2]
    for s in (0.0, 0.5):
        shifted = synthetic.SyntheticConfig(balance_shift=s)
        image, label = synthetic.render_sample(shifted, "source", "train", 3)
        ref_image, ref_label = synthetic.render_sample(synthetic.SyntheticConfig(), "source", "train", 3)
        assert np.array_equal(image, ref_image) and np.array_equal(label, ref_label)
