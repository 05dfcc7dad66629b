"""DomainData builds each split on first access: evaluation needs only the split it evaluates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segda import cli
from segda.config import DataConfig
from segda.data import cityscapes as cs
from segda.data import registry
from segda.data.real import DatasetNotFoundError, MissingFilesError

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
TINY = {"data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.max_iters": 2, "optim.early_stop": 2, "run.device": "cpu", "run.progress": False,
        "run.eval_max_images": 2}


@pytest.fixture(scope="module")
def val_only_root(tmp_path_factory) -> Path:
    """``<root>/Cityscapes`` with the 500 official val images (16x8) and their gtFine labels,
    prepared; no train split, no GTA5."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name in cs.official_list("val"):
        img = root / "Cityscapes/leftImg8bit/val" / name
        lab = root / "Cityscapes/gtFine/val" / (cs.stem(name) + cs.LABEL_IDS_SUFFIX)
        img.parent.mkdir(parents=True, exist_ok=True)
        lab.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8), mode="RGB").save(img)
        Image.fromarray(rng.integers(0, 34, (8, 16), dtype=np.uint8), mode="L").save(lab)
    cs.prepare(root / "Cityscapes", splits=["val"], log=lambda s: None)
    return root


def test_eval_command_needs_only_cityscapes_val(val_only_root, tmp_path, capsys):
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    run_dir = tmp_path / "run"
    assert cli.main(["train", "embedded/source_only", "--run-dir", str(run_dir), *sets]) == 0
    assert cli.main(["eval", "--checkpoint", str(run_dir / "last.pth"), "--dataset",
                     "gta5_cityscapes", "--root", str(val_only_root), "--max-images", "3",
                     "--device", "cpu", "--out", str(tmp_path / "eval")]) == 0
    # named by the run folder and file, the dataset, the root and the image count
    written = [f.name for f in (tmp_path / "eval").glob("eval_run-last_*.csv")]
    assert len(written) == 1 and "_gta5_cityscapes_root-" in written[0], written
    assert written[0].endswith("_3img_19cls.csv")
    assert "mIoU" in capsys.readouterr().out


def test_splits_are_built_on_first_access(val_only_root):
    data = registry.build_datasets(DataConfig(dataset="gta5_cityscapes", root=str(val_only_root)))
    assert len(data.val_target) == 500 and data.val_source is None
    assert data.val_target is data.val_target  # built once
    with pytest.raises(DatasetNotFoundError) as err:
        _ = data.train_source
    msg = str(err.value)
    assert f"gta5 root not found: {val_only_root / 'GTA5'}" in msg
    assert f"python data_scripts/prepare_gta5.py --root {val_only_root / 'GTA5'}" in msg
    with pytest.raises(MissingFilesError, match="leftImg8bit/train"):
        _ = data.train_target
    with pytest.raises(DatasetNotFoundError, match="prepare_gta5.py"):
        data.source_prior()
    assert "val_target" in repr(data)


def test_oracle_source_is_the_target_split():
    data = registry.build_datasets(DataConfig(source_size=(32, 16), target_size=(32, 16),
                                              train_on="target"))
    assert data.train_source is data.train_target
    assert data.train_source.domain == "target"


def test_every_split_needs_a_builder():
    with pytest.raises(ValueError, match=r"missing \['val_source', 'val_target'\]"):
        registry.DomainData({"train_source": list, "train_target": list})


def test_replace_gives_some_splits_and_builds_the_others_from_the_original():
    from segda.data.registry import DomainData

    built = []

    def make(name):
        def build():
            built.append(name)
            return [name]
        return build

    base = DomainData({s: make(s) for s in ("train_source", "train_target", "val_source",
                                            "val_target")})
    copy = base.replace(train_source=["mine"])
    assert copy.train_source == ["mine"] and built == []
    assert copy.val_target == ["val_target"] and built == ["val_target"]
    assert base.val_target == ["val_target"] and built == ["val_target"]  # built once, shared
    with pytest.raises(ValueError, match="unknown split"):
        base.replace(test=[])
