"""The embedded synthetic benchmark: determinism, shapes, layout prior, the two domain shifts,
flips and the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segda.data import synthetic
from segda.data.stats import class_frequencies
from segda.data.synthetic import (
    CAR,
    IMAGE_MEAN,
    ROAD,
    SKY,
    VEGETATION,
    SyntheticConfig,
    SyntheticStreetScenes,
    render_sample,
    render_split,
    source_class_prior,
)

SMALL = SyntheticConfig(n_source_train=48, n_source_val=48, n_target_train=48, n_target_val=48)
DOMAINS = ("source", "target")


@pytest.fixture(scope="module")
def val_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {d: render_split(SMALL, d, "val") for d in DOMAINS}


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_index_same_sample(domain):
    a = render_sample(SMALL, domain, "train", 3)
    b = render_sample(SMALL, domain, "train", 3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    ds = SyntheticStreetScenes(domain, "train", SMALL, cache=False)
    first, second = ds[3], ds[3]
    assert torch.equal(first["image"], second["image"])
    assert torch.equal(first["label"], second["label"])


def test_different_seeds_differ():
    other = SyntheticConfig(**{**SMALL.__dict__, "seed": 1})
    assert not np.array_equal(render_sample(SMALL, "source", "train", 0)[1],
                              render_sample(other, "source", "train", 0)[1])


def test_appearance_knobs_keep_labels():
    shifted = SyntheticConfig(**{**SMALL.__dict__, "palette_shift": 1.0, "light_shift": 0.0,
                                 "condition_shift": 1.0, "class_confusion": 0.0})
    for i in range(3):
        np.testing.assert_array_equal(render_sample(SMALL, "target", "val", i)[1],
                                      render_sample(shifted, "target", "val", i)[1])


@pytest.mark.parametrize("domain", DOMAINS)
def test_item_shapes_dtypes_and_normalisation(domain):
    ds = SyntheticStreetScenes(domain, "val", SMALL)
    item = ds[5]
    assert set(item) == {"image", "label", "index"} and item["index"] == 5
    assert item["image"].shape == (3, 64, 128) and item["image"].dtype == torch.float32
    assert item["label"].shape == (64, 128) and item["label"].dtype == torch.int64
    raw = ds.raw_image(5)
    assert raw.shape == (64, 128, 3) and raw.dtype == np.float32
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    torch.testing.assert_close(item["image"] + IMAGE_MEAN, torch.from_numpy(raw).permute(2, 0, 1))
    assert len(ds) == 48


def test_labels_within_declared_classes(val_sets):
    for _, labels in val_sets.values():
        assert set(np.unique(labels)) <= set(SMALL.classes)
    with_lights = SyntheticConfig(**{**SMALL.__dict__, "traffic_lights": True})
    _, labels = render_split(with_lights, "source", "val", image=False)
    assert set(np.unique(labels)) <= set(with_lights.classes)
    assert synthetic.LIGHT in np.unique(labels)


def test_splits_and_domains_disjoint():
    for i in range(4):
        samples = [render_sample(SMALL, d, s, i)[0] for d in DOMAINS for s in ("train", "val")]
        for a in range(len(samples)):
            for b in range(a + 1, len(samples)):
                assert not np.array_equal(samples[a], samples[b])


def test_layout_prior(val_sets):
    for _, labels in val_sets.values():
        top = labels[:, :3]
        assert (top == SKY).mean() > 0.5
        bottom_centre = labels[:, -4:, 56:72]
        assert (bottom_centre == ROAD).mean() > 0.5


def test_class_balance_shift():
    freq = {d: class_frequencies(SyntheticStreetScenes(d, "val", SMALL)) for d in DOMAINS}
    for f in freq.values():
        assert f.shape == (19,) and np.isclose(f.sum(), 1.0)
    assert freq["target"][VEGETATION] > freq["source"][VEGETATION]
    assert freq["target"][CAR] < freq["source"][CAR]


def test_appearance_shift():
    # the global shift moves every class's mean colour (the default's shift is tested below)
    glob = SyntheticConfig(**{**SMALL.__dict__, **synthetic.SHIFTS["global"]})
    sets = {d: render_split(glob, d, "val") for d in DOMAINS}

    def mean_colour(domain, cls):
        images, labels = sets[domain]
        return images[labels == cls].mean(axis=0) / 255.0

    for cls in (ROAD, synthetic.BUILDING, VEGETATION, SKY, CAR):
        gap = np.abs(mean_colour("source", cls) - mean_colour("target", cls)).max()
        assert gap > 0.05, cls


def test_flip_deterministic_and_consistent():
    plain = SyntheticStreetScenes("source", "val", SMALL)
    flipped = SyntheticStreetScenes("source", "val", SMALL, flip=True, flip_seed=3)
    decisions = [flipped.is_flipped(i) for i in range(len(flipped))]
    assert decisions == [flipped.is_flipped(i) for i in range(len(flipped))]
    assert 0 < sum(decisions) < len(decisions)
    i = decisions.index(True)
    j = decisions.index(False)
    assert torch.equal(flipped[i]["image"], plain[i]["image"].flip(-1))
    assert torch.equal(flipped[i]["label"], plain[i]["label"].flip(-1))
    assert torch.equal(flipped[j]["image"], plain[j]["image"])
    flipped.set_flip_salt(1)
    assert [flipped.is_flipped(i) for i in range(len(flipped))] != decisions
    assert not any(plain.is_flipped(i) for i in range(len(plain)))


def test_cache_round_trip(tmp_path):
    cfg = SyntheticConfig(**{**SMALL.__dict__, "n_target_val": 6})
    ds = SyntheticStreetScenes("target", "val", cfg)
    path = ds.save_cache(tmp_path / "target_val.npz")
    loaded = SyntheticStreetScenes.load(path)
    uncached = SyntheticStreetScenes("target", "val", cfg, cache=False)
    assert loaded.config == cfg and (loaded.domain, loaded.split) == ("target", "val")
    for i in range(len(ds)):
        for other in (loaded, uncached):
            assert torch.equal(ds[i]["image"], other[i]["image"])
            assert torch.equal(ds[i]["label"], other[i]["label"])


def test_source_class_prior_matches_labels():
    prior = source_class_prior(SMALL)
    assert prior.shape == (19,) and np.isclose(prior.sum(), 1.0)
    _, labels = render_split(SMALL, "source", "train", image=False)
    expected = np.bincount(labels.ravel(), minlength=19)[:19] / labels.size
    np.testing.assert_allclose(prior, expected)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        SyntheticStreetScenes("gta5", "train")
    with pytest.raises(IndexError):
        SyntheticStreetScenes("source", "val", SMALL)[48]
    with pytest.raises(ValueError):
        SyntheticConfig.from_json('{"height": 64, "colour": 1}')


def test_flip_keyed_by_draw_through_the_registry_and_loader():
    """data.flip mirrors the embedded training splits with a coin keyed by (index, draw), so a
    loader resumed at iteration k yields exactly the batches of an uninterrupted one."""
    from segda.config import DataConfig
    from segda.data import loaders, registry

    cfg = DataConfig(source_size=(32, 16), target_size=(32, 16), flip=True)
    data = registry.build_datasets(cfg)
    assert data.train_source.flip and data.train_target.flip
    assert not data.val_source.flip and not data.val_target.flip  # evaluation is never mirrored
    assert not registry.build_datasets(DataConfig(source_size=(32, 16),
                                                  target_size=(32, 16))).train_source.flip
    ds = data.train_source
    plain = SyntheticStreetScenes("source", "train", ds.config)
    draws = [ds.is_flipped(0, d) for d in range(32)]
    assert 0 < sum(draws) < 32 and draws == [ds.is_flipped(0, d) for d in range(32)]
    d_on, d_off = draws.index(True), draws.index(False)
    assert torch.equal(ds[(0, d_on)]["image"], plain[0]["image"].flip(-1))
    assert torch.equal(ds[(0, d_on)]["label"], plain[0]["label"].flip(-1))
    assert torch.equal(ds[(0, d_off)]["image"], plain[0]["image"]) and ds[(0, d_on)]["index"] == 0

    first = loaders.build_loader(ds, batch_size=4, seed=7)
    batches = [next(first) for _ in range(5)]
    resumed = loaders.build_loader(ds, batch_size=4, seed=7, start_iter=3)
    for want in batches[3:]:
        got = next(resumed)
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["label"], want["label"])
    # the stream does mirror: some drawn images equal their mirrored unflipped sample
    mirrored = [bool(torch.equal(img, plain[int(i)]["image"].flip(-1)))
                for b in batches for img, i in zip(b["image"], b["index"], strict=True)]
    assert 0 < sum(mirrored) < len(mirrored)


def _with(**kw) -> SyntheticConfig:
    return SyntheticConfig(**{**SMALL.__dict__, **kw})


def test_class_confusion_makes_sidewalk_look_like_road_and_terrain_like_vegetation():
    def distance(cfg, a, b):
        images, labels = render_split(cfg, "target", "val")
        colour = {c: images[labels == c].mean(axis=0) / 255.0 for c in (a, b)}
        return float(np.abs(colour[a] - colour[b]).sum())

    for a, b in ((synthetic.SIDEWALK, ROAD), (synthetic.TERRAIN, VEGETATION)):
        apart, alike = distance(_with(class_confusion=0.0), a, b), distance(_with(class_confusion=1.0), a, b)
        # at 1 the two classes share one palette colour: only textures and noise tell them apart
        assert alike < 0.5 * apart, (a, b, apart, alike)
    # the source never changes
    np.testing.assert_array_equal(render_sample(_with(class_confusion=1.0), "source", "val", 0)[0],
                                  render_sample(_with(class_confusion=0.0), "source", "val", 0)[0])


def test_conditions_vary_from_image_to_image_more_than_the_set_moves():
    def brightness(cfg):
        images, _ = render_split(cfg, "target", "val")
        return images.reshape(len(images), -1).mean(axis=1) / 255.0

    still, varied = brightness(_with(condition_shift=0.0)), brightness(_with(condition_shift=0.5))
    # each image draws its own exposure, contrast and haze: the spread over images grows ...
    assert varied.std() > 1.5 * still.std()
    # ... by more than the whole set's mean moves, which is all one set of statistics can undo
    assert abs(varied.mean() - still.mean()) < varied.std()


def test_named_shifts_set_every_knob_and_the_default_is_beyond_statistics():
    assert synthetic.shift_overrides("global") == {
        "data.palette_shift": 0.3, "data.light_shift": 0.3, "data.condition_shift": 0.0,
        "data.class_confusion": 0.0}
    default = SyntheticConfig()
    assert {k: getattr(default, k) for k in synthetic.SHIFTS["beyond_statistics"]} == \
        synthetic.SHIFTS["beyond_statistics"]
    with pytest.raises(ValueError, match="unknown shift 'nope'"):
        synthetic.shift_overrides("nope")
