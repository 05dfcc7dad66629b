"""The embedded benchmark's label-shift switch and the patch-verdict discriminator option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segda import config as config_mod
from segda import models
from segda.data import embedded_cache, registry
from segda.data.stats import class_frequencies
from segda.data.synthetic import SyntheticConfig, SyntheticStreetScenes, render_sample
from segda.labels import CLASS_NAMES
from segda.models.discriminators import FCDiscriminator, FeatureDiscriminator

BUILDING, VEGETATION = CLASS_NAMES.index("building"), CLASS_NAMES.index("vegetation")


def _small(shift: float) -> SyntheticConfig:
    return SyntheticConfig(height=32, width=64, balance_shift=shift, n_source_val=40,
                           n_target_val=40)


# By hand: a 4x4 conv at stride 2 with padding 1 maps n to (n + 2 - 4) // 2 + 1 = n / 2 for
# even n; at stride 1 with "same" padding it keeps n. On a 64x128 (HxW) map: official, five
# halvings: 2x4; two stride-1 layers: three halvings, 8x16; three: 16x32.
@pytest.mark.parametrize("stride1, shape", [(0, (2, 4)), (1, (4, 8)), (2, (8, 16)), (3, (16, 32))])
def test_discriminator_verdicts_at_128x64(stride1, shape):
    disc = FCDiscriminator(19, ndf=8, stride1_layers=stride1)
    out = disc(torch.zeros(2, 19, 64, 128))
    assert tuple(out.shape) == (2, 1, *shape)


def test_patch_discriminator_keeps_the_official_keys_and_shapes():
    official = FCDiscriminator(19, ndf=8).state_dict()
    patch = FCDiscriminator(19, ndf=8, stride1_layers=2)
    shapes = {k: v.shape for k, v in patch.state_dict().items()}
    assert shapes == {k: v.shape for k, v in official.items()}
    assert list(official) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias",
                              "6.weight", "6.bias", "8.weight", "8.bias"]
    patch.load_state_dict(official)  # an official checkpoint loads as it is


def test_stride1_is_applied_to_the_last_layers_only():
    disc = FCDiscriminator(3, ndf=4, stride1_layers=2)
    strides = [m.stride for m in disc if isinstance(m, torch.nn.Conv2d)]
    assert strides == [(2, 2), (2, 2), (2, 2), (1, 1), (1, 1)]


def test_bad_stride1_values_name_the_setting():
    with pytest.raises(ValueError, match="method.disc_patch_stride1 = 6"):
        FCDiscriminator(3, stride1_layers=6)
    with pytest.raises(ValueError, match="method.disc_patch_stride1 = 1.*output-space"):
        FeatureDiscriminator(16, stride1_layers=1)


def test_config_reaches_the_discriminator():
    cfg = config_mod.load("embedded/output_adv_single", {"method.disc_patch_stride1": 2})
    assert cfg.method.disc_patch_stride1 == 2
    assert config_mod.load("embedded/output_adv_single").method.disc_patch_stride1 == 0
    disc = models.build_discriminator("output", 19, 8, stride1_layers=cfg.method.disc_patch_stride1)
    assert tuple(disc(torch.zeros(1, 19, 64, 128)).shape) == (1, 1, 8, 16)


def test_balance_shift_moves_the_target_class_shares_only():
    shares = {s: class_frequencies(SyntheticStreetScenes("target", "val", _small(s)))
              for s in (0.0, 0.5, 1.0)}
    source = class_frequencies(SyntheticStreetScenes("source", "val", _small(0.0)))
    # The generator's target draws more vegetation blocks and fewer buildings as the shift grows.
    assert shares[0.0][VEGETATION] < shares[0.5][VEGETATION] < shares[1.0][VEGETATION]
    assert shares[0.0][BUILDING] > shares[0.5][BUILDING] > shares[1.0][BUILDING]
    # At 0 the target's layout follows the source's prior: shares within a few points.
    assert np.abs(shares[0.0] - source).max() < 0.05
    assert np.abs(shares[1.0] - source).max() > 0.10
    for i in (0, 17, 39):  # source images and labels do not depend on the target's shift
        a, b = render_sample(_small(0.0), "source", "val", i), render_sample(_small(1.0), "source", "val", i)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_registry_passes_balance_shift_and_the_cache_keys_on_it(tmp_path):
    data = config_mod.load("embedded/source_only", {"data.balance_shift": 0.5}).data
    built = registry.build_datasets(data)
    assert built.val_target.config.balance_shift == 0.5
    assert config_mod.load("embedded/source_only").data.balance_shift == 1.0
    config = SyntheticConfig(height=16, width=32, n_target_val=2)
    path = embedded_cache.cache_path(tmp_path, "target", "val")
    SyntheticStreetScenes("target", "val", config).save_cache(path)
    other = SyntheticConfig(height=16, width=32, n_target_val=2, balance_shift=0.5)
    with pytest.warns(UserWarning, match="--balance-shift 0.5"):
        assert embedded_cache.load_verified(tmp_path, "target", "val", other) is None
    assert embedded_cache.load_verified(tmp_path, "target", "val", config) is not None
