"""data_scripts/cache_embedded.py writes splits that load back identically, and the registry
reads them only when they hold exactly what the run's generator config renders."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from segda.config import DataConfig
from segda.data import embedded_cache, registry, synthetic

SCRIPT = Path(__file__).resolve().parents[1] / "data_scripts" / "cache_embedded.py"


def run_script(argv):
    spec = importlib.util.spec_from_file_location("cache_embedded", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


@pytest.fixture(scope="module")
def cached_root(tmp_path_factory) -> Path:
    """A data root whose embedded/ folder holds every split at 16x32 (seed 0)."""
    root = tmp_path_factory.mktemp("data")
    assert run_script(["--out", str(root / "embedded"), "--height", "16", "--width", "32"]) == 0
    return root


def test_cache_round_trip(cached_root):
    loaded = synthetic.SyntheticStreetScenes.load(cached_root / "embedded" / "target_val.npz")
    fresh = synthetic.SyntheticStreetScenes(
        "target", "val", synthetic.SyntheticConfig(height=16, width=32)
    )
    assert len(loaded) == len(fresh)
    for i in (0, len(fresh) - 1):
        assert np.array_equal(loaded[i]["image"].numpy(), fresh[i]["image"].numpy())
        assert np.array_equal(loaded[i]["label"].numpy(), fresh[i]["label"].numpy())


def small(root, **kw) -> DataConfig:
    return DataConfig(root=str(root), source_size=(32, 16), target_size=(32, 16), **kw)


def test_registry_reads_a_matching_cache(cached_root, tmp_path):
    data = registry.build_datasets(small(cached_root, flip=True))
    for ds, name in ((data.train_source, "source_train"), (data.train_target, "target_train"),
                     (data.val_source, "source_val"), (data.val_target, "target_val")):
        assert ds.cache_file == cached_root / "embedded" / f"{name}.npz"
    assert data.train_source.flip and not data.val_target.flip
    rendered = registry.build_datasets(small(tmp_path, flip=True))  # no cache under tmp_path
    assert rendered.val_target.cache_file is None
    for i in (0, 7):
        for key in (i, (i, 3)):
            a, b = data.train_source[key], rendered.train_source[key]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_registry_renders_a_run_of_another_config_silently(cached_root):
    """The cache is 16x32 with the generator's defaults; a run asking for another palette shift
    renders its own samples, without a warning (make test and make demo write the walk's cache,
    and runs of other sizes and shifts are common)."""
    import warnings

    data = registry.build_datasets(small(cached_root, palette_shift=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.val_target.cache_file is None
        fresh = synthetic.SyntheticStreetScenes(
            "target", "val", synthetic.SyntheticConfig(height=16, width=32, palette_shift=0.5))
        assert torch.equal(data.val_target[0]["image"], fresh[0]["image"])


def test_the_rebuild_command_names_every_generator_setting(tmp_path):
    config = synthetic.SyntheticConfig(height=16, width=32, palette_shift=0.5, class_confusion=0.7)
    command = embedded_cache.rebuild_command(tmp_path, config)
    assert "cache_embedded.py" in command and "--palette-shift 0.5" in command
    assert "--class-confusion 0.7" in command and "--height 16 --width 32" in command


def test_a_cache_the_generator_no_longer_renders_is_ignored(tmp_path):
    config = synthetic.SyntheticConfig(height=16, width=32)
    ds = synthetic.SyntheticStreetScenes("target", "val", config)
    ds.render_all()
    ds._labels[-1] = (ds._labels[-1] + 1) % 19  # as if written by another generator version
    path = ds.save_cache(tmp_path / "target_val.npz")
    with pytest.warns(UserWarning, match="differ from what the generator renders"):
        assert embedded_cache.load_verified(tmp_path, "target", "val", config) is None
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match=f"{path}.*cannot read it"):
        assert embedded_cache.load_verified(tmp_path, "target", "val", config) is None


def test_a_cache_of_another_split_is_ignored(cached_root, tmp_path):
    config = synthetic.SyntheticConfig(height=16, width=32)
    (tmp_path / "target_val.npz").write_bytes((cached_root / "embedded/source_val.npz").read_bytes())
    with pytest.warns(UserWarning, match=r"target_val\.npz: it holds source/val, not target/val"):
        assert embedded_cache.load_verified(tmp_path, "target", "val", config) is None


def test_the_makefile_cache_serves_every_embedded_preset():
    """make test / make demo write one cache with --preset embedded/source_only; every
    embedded/* preset of the walk renders that same benchmark, so each of them reads it."""
    import re

    from segda import config

    makefile = (SCRIPT.parents[1] / "Makefile").read_text()
    preset = re.search(r"cache_embedded\.py --out data/embedded --preset (\S+)", makefile).group(1)
    cached = run_script_module().generator_config(preset)
    assert (cached.height, cached.width, cached.balance_shift) == (64, 128, 0.3)
    embedded = [p for p in config.list_presets() if p.startswith("embedded/")]
    assert len(embedded) >= 9
    for name in embedded:
        assert registry.embedded_config(config.load(name).data) == cached, name


def test_the_script_refuses_a_preset_or_value_it_cannot_render(capsys, tmp_path):
    assert run_script(["--out", str(tmp_path), "--preset", "paper/advent"]) == 1
    assert "not the embedded benchmark" in capsys.readouterr().err
    assert run_script(["--out", str(tmp_path), "--balance-shift", "-5"]) == 1
    assert "--balance-shift must lie in [0.0, 1.0]" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def run_script_module():
    spec = importlib.util.spec_from_file_location("cache_embedded", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
