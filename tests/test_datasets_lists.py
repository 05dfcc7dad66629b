"""List files: subsets of GTA5 and Cityscapes named one per line, as the official lists do.

A list replaces the official list (and its count check) in the datasets, the prepare scripts,
the doctor and ``DataConfig.{source,target,val}_list``; a list that names a missing file is an
error naming that file and the list.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segda import doctor
from segda.config import DataConfig
from segda.data import cityscapes as cs
from segda.data import gta5, real, registry
from segda.data.real import CountMismatchError, DatasetError, MissingFilesError

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
GTA_NAMES = [f"{k:05d}.png" for k in range(1, 5)]
CITY = {"train": cs.official_list("train")[:2], "val": cs.official_list("val")[:2]}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "data_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_list(path: Path, names: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """GTA5 (4 pairs, palette labels of label ids) and Cityscapes (2 train, 2 val) trees."""
    rng = np.random.default_rng(0)
    for name in GTA_NAMES:
        for folder, arr, mode in (("images", rng.integers(0, 256, (8, 12, 3)), "RGB"),
                                  ("labels", rng.integers(0, 34, (8, 12)), "P")):
            path = tmp_path / "GTA5" / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(arr.astype(np.uint8), mode=mode)
            if mode == "P":  # a full palette, so that PIL keeps the indices as they are
                im.putpalette([v for i in range(256) for v in (i, i, i)])
            im.save(path)
    for split, names in CITY.items():
        for n in names:
            img = tmp_path / "Cityscapes/leftImg8bit" / split / n
            lab = tmp_path / "Cityscapes/gtFine" / split / (cs.stem(n) + cs.LABEL_IDS_SUFFIX)
            for path, arr, mode in ((img, rng.integers(0, 256, (8, 16, 3)), "RGB"),
                                    (lab, rng.integers(0, 34, (8, 16)), "L")):
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr.astype(np.uint8), mode=mode).save(path)
    return tmp_path


def test_read_list(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("00002.png\n\n00001.png\n")
    assert real.read_list(path) == ["00002.png", "00001.png"]  # order kept, blank lines skipped
    with pytest.raises(MissingFilesError, match=f"list file not found: {tmp_path / 'nope.txt'}"):
        real.read_list(tmp_path / "nope.txt")
    path.write_text("\n")
    with pytest.raises(DatasetError, match=f"{path} names no files; write one name per line"):
        real.read_list(path)


def test_gta5_subset_list_skips_the_official_count(root):
    gta = root / "GTA5"
    lst = write_list(root / "lists/gta5.txt", ["00003.png", "00001.png"])
    with pytest.raises(CountMismatchError, match="24966"):
        gta5.prepare(gta, log=lambda s: None)
    report = gta5.prepare(gta, lists={"train": lst}, log=lambda s: None)
    assert sorted(report["class_pixels"]) == ["00001.png", "00003.png"]
    assert report["list"] == str(lst) and report["missing_pairs"] == []
    assert not (gta / "labels/00002_labelTrainIds.png").exists()  # only listed pairs
    ds = gta5.GTA5(gta, size=None, list_file=lst)
    assert ds.names == ["00003.png", "00001.png"] and len(ds) == 2
    # a second list keeps what the first run recorded
    more = write_list(root / "lists/more.txt", ["00002.png"])
    report = gta5.prepare(gta, lists={"train": more}, log=lambda s: None)
    assert sorted(report["class_pixels"]) == ["00001.png", "00002.png", "00003.png"]


def test_a_list_naming_a_missing_file_is_an_error(root):
    gta = root / "GTA5"
    lst = write_list(root / "lists/gta5.txt", ["00001.png", "00009.png"])
    with pytest.raises(MissingFilesError) as err:
        gta5.prepare(gta, lists={"train": lst}, log=lambda s: None)
    assert "00009.png" in str(err.value) and str(lst) in str(err.value)
    with pytest.raises(MissingFilesError) as err:
        gta5.GTA5(gta, list_file=lst)
    assert "00009.png" in str(err.value) and f"named by list {lst}" in str(err.value)
    val = write_list(root / "lists/val.txt", [CITY["val"][0], "lindau/lindau_000099_000019_leftImg8bit.png"])
    with pytest.raises(MissingFilesError) as err:
        cs.prepare(root / "Cityscapes", splits=["val"], lists={"val": val}, log=lambda s: None)
    assert "lindau_000099_000019" in str(err.value) and str(val) in str(err.value)
    with pytest.raises(MissingFilesError) as err:
        cs.Cityscapes(root / "Cityscapes", split="val", list_file=val)
    assert "lindau_000099_000019" in str(err.value) and str(val) in str(err.value)
    # converted labels missing: the fix repeats the list
    gta5.prepare(gta, lists={"train": write_list(root / "lists/a.txt", ["00001.png"])},
                 log=lambda s: None)
    with pytest.raises(MissingFilesError, match=r"prepare_gta5.py --root .* --list .*b\.txt"):
        gta5.GTA5(gta, list_file=write_list(root / "lists/b.txt", ["00001.png", "00002.png"]))


def test_registry_builds_the_listed_subsets(root):
    lists = {"source_list": ["00004.png", "00002.png"], "target_list": CITY["train"][:1],
             "val_list": CITY["val"]}
    paths = {k: str(write_list(root / f"lists/{k}.txt", v)) for k, v in lists.items()}
    gta5.prepare(root / "GTA5", lists={"train": paths["source_list"]}, log=lambda s: None)
    cs.prepare(root / "Cityscapes", lists={"train": paths["target_list"],
                                          "val": paths["val_list"]}, log=lambda s: None)
    cfg = DataConfig(dataset="gta5_cityscapes", root=str(root), source_size=(12, 8),
                     target_size=(16, 8), **paths)
    data = registry.build_datasets(cfg)
    assert data.train_source.names == lists["source_list"]
    assert data.train_target.names == lists["target_list"]
    assert data.val_target.names == lists["val_list"]
    assert data.train_source[0]["label"].shape == (8, 12)
    assert data.source_prior().sum() == pytest.approx(1.0)
    with pytest.raises(CountMismatchError, match="24966"):  # "" = the official list
        _ = registry.build_datasets(DataConfig(dataset="gta5_cityscapes", root=str(root))).train_source


def test_prepare_scripts_and_doctor_take_lists(root, capsys):
    gta_list = write_list(root / "lists/gta5.txt", GTA_NAMES)
    train = write_list(root / "lists/train.txt", CITY["train"])
    val = write_list(root / "lists/val.txt", CITY["val"])
    gta_args = ["--root", str(root / "GTA5"), "--list", str(gta_list)]
    cs_args = ["--root", str(root / "Cityscapes"), "--list", f"train={train}", "--list", f"val={val}"]
    assert doctor.main(["--dataset", "gta5", *gta_args]) == 1  # not converted yet
    assert load_script("prepare_gta5").main(gta_args) == 0
    assert load_script("prepare_cityscapes").main(cs_args) == 0
    capsys.readouterr()
    assert doctor.main(["--dataset", "gta5", *gta_args]) == 0
    assert doctor.main(["--dataset", "cityscapes", *cs_args]) == 0
    out = capsys.readouterr().out
    assert f"val images (list {val}): 2/2" in out and "named by" in out
    with pytest.raises(SystemExit) as done:  # Cityscapes has two lists: say which
        doctor.main(["--dataset", "cityscapes", "--root", str(root), "--list", str(val)])
    assert done.value.code == 2 and "--list train=FILE" in capsys.readouterr().err
    missing = root / "lists/none.txt"
    assert doctor.main(["--dataset", "gta5", "--root", str(root / "GTA5"), "--list",
                        str(missing)]) == 1
    assert f"list file not found: {missing}" in capsys.readouterr().out


def test_list_argument_errors(root, tmp_path, capsys):
    lst = write_list(root / "lists/gta5.txt", ["00001.png"])
    with pytest.raises(ValueError, match=r"list files given for splits \['val'\]; this dataset "
                                         r"has \['train'\]"):
        gta5.prepare(root / "GTA5", lists={"val": lst}, log=lambda s: None)
    with pytest.raises(ValueError, match="pass ids or list_file, not both"):
        gta5.GTA5(root / "GTA5", ids=["00001.png"], list_file=lst)
    with pytest.raises(ValueError, match="pass names or list_file, not both"):
        cs.Cityscapes(root / "Cityscapes", split="val", names=CITY["val"], list_file=lst)
    with pytest.raises(SystemExit) as done:
        load_script("prepare_gta5").main(["--root", str(root / "GTA5"), "--list", str(lst),
                                          "--list", str(lst)])
    assert done.value.code == 2 and "--list given twice for train" in capsys.readouterr().err


def test_synthia_lists(tmp_path):
    from segda.data import miniature, synthia

    mini = miniature.make_miniature(tmp_path / "mini", init=False)
    lst = write_list(tmp_path / "syn.txt", ["0000002.png", "0000000.png"])
    report = synthia.prepare(mini.synthia, lists={"train": lst}, log=lambda s: None)
    assert sorted(report["class_pixels"]) == ["0000000.png", "0000002.png"]
    assert synthia.SYNTHIA(mini.synthia, list_file=lst).names == ["0000002.png", "0000000.png"]
    bad = write_list(tmp_path / "bad.txt", ["0000000.png", "0000007.png"])
    with pytest.raises(MissingFilesError) as err:
        synthia.prepare(mini.synthia, lists={"train": bad}, log=lambda s: None)
    assert "RGB/0000007.png" in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(MissingFilesError) as err:
        synthia.SYNTHIA(mini.synthia, list_file=bad)
    assert "0000007.png" in str(err.value) and f"named by list {bad}" in str(err.value)
    findings = synthia.check(mini.synthia, lists={"train": tmp_path / "none.txt"})
    assert [f.level for f in findings] == ["problem"]
    assert f"list file not found: {tmp_path / 'none.txt'}" in findings[0].message
