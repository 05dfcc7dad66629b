"""data_scripts/cache_embedded.py writes splits that load back identically."""

import importlib.util
from pathlib import Path

import numpy as np

from segda.data import synthetic

SCRIPT = Path(__file__).resolve().parents[1] / "data_scripts" / "cache_embedded.py"


def test_cache_round_trip(tmp_path):
    spec = importlib.util.spec_from_file_location("cache_embedded", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path), "--height", "16", "--width", "32"]) == 0
    loaded = synthetic.SyntheticStreetScenes.load(tmp_path / "target_val.npz")
    fresh = synthetic.SyntheticStreetScenes(
        "target", "val", synthetic.SyntheticConfig(height=16, width=32)
    )
    assert len(loaded) == len(fresh)
    for i in (0, len(fresh) - 1):
        assert np.array_equal(loaded[i]["image"].numpy(), fresh[i]["image"].numpy())
        assert np.array_equal(loaded[i]["label"].numpy(), fresh[i]["label"].numpy())
