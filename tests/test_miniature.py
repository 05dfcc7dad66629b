"""The miniature datasets: the official layouts and encodings, prepared by every
data_scripts/prepare_*.py, passed by the doctor, loaded through the registry with list files;
the init checkpoint has the official DeepLab init's keys and loads as an init."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segda import doctor
from segda.config import DataConfig
from segda.data import cityscapes as cs
from segda.data import miniature, registry, synthia
from segda.data.real import decode, read_list

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "data_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> miniature.Miniature:
    """A fresh miniature tree, with its init checkpoint (made by the command's own function)."""
    return miniature.make_miniature(tmp_path_factory.mktemp("mini") / "data")


@pytest.fixture(scope="module")
def prepared(mini) -> miniature.Miniature:
    """The miniature after every prepare script ran on it with its list files."""
    lists = mini.lists
    assert load_script("prepare_gta5").main(
        ["--root", str(mini.gta5), "--list", str(lists["gta5_train"])]) == 0
    assert load_script("prepare_cityscapes").main(
        ["--root", str(mini.cityscapes), "--list", f"train={lists['cityscapes_train']}",
         "--list", f"val={lists['cityscapes_val']}"]) == 0
    assert load_script("prepare_synthia").main(
        ["--root", str(mini.synthia), "--list", str(lists["synthia_train"])]) == 0
    return mini


def test_official_layouts_and_encodings(mini):
    gta = read_list(mini.lists["gta5_train"])
    assert gta == ["00001.png", "00002.png", "00003.png", "00004.png"]
    for name in gta:
        with Image.open(mini.gta5 / "labels" / name) as label:
            assert label.mode == "P"  # indices are Cityscapes label ids
            ids = set(np.unique(np.asarray(label)).tolist())
        assert ids <= set(range(34)) and {7, 23, 26} <= ids  # road, sky, car
    sizes = {n: (Image.open(mini.gta5 / "images" / n).size, Image.open(mini.gta5 / "labels" / n).size)
             for n in gta}
    assert [n for n, (a, b) in sizes.items() if a != b] == [miniature.GTA5_MISMATCH]
    # Cityscapes: names from the official lists, one val image per official val city
    train, val = (read_list(mini.lists[k]) for k in ("cityscapes_train", "cityscapes_val"))
    assert set(train) <= set(cs.official_list("train")) and set(val) <= set(cs.official_list("val"))
    assert sorted(n.split("/")[0] for n in val) == ["frankfurt", "lindau", "munster"]
    for split, names in (("train", train), ("val", val)):
        for n in names:
            assert (mini.cityscapes / "leftImg8bit" / split / n).is_file()
            gt = mini.cityscapes / "gtFine" / split / cs.stem(n)
            poly = json.loads(Path(f"{gt}{cs.POLYGONS_SUFFIX}").read_text())
            with Image.open(f"{gt}{cs.LABEL_IDS_SUFFIX}") as ids:
                assert ids.mode == "L" and ids.size == (poly["imgWidth"], poly["imgHeight"])
            assert {o["label"] for o in poly["objects"]} >= {"road", "sky", "ego vehicle"}
    # SYNTHIA: 16-bit labels, 3 channels, the class id in the first
    for n in read_list(mini.lists["synthia_train"]):
        raw = decode(mini.synthia / "GT" / "LABELS" / n)
        assert raw.dtype == torch.uint16 and raw.shape[0] == 3
        assert set(raw[0].unique().tolist()) <= set(synthia.SYNTHIA_CLASSES)
        assert raw[1].to(torch.int32).max() > 255  # instance ids need the high byte


def test_prepare_and_doctor_pass_on_every_dataset(prepared, capsys):
    lists = prepared.lists
    for args in (["--dataset", "gta5", "--root", str(prepared.gta5), "--list",
                  str(lists["gta5_train"])],
                 ["--dataset", "cityscapes", "--root", str(prepared.cityscapes), "--list",
                  f"train={lists['cityscapes_train']}", "--list", f"val={lists['cityscapes_val']}"],
                 ["--dataset", "synthia", "--root", str(prepared.synthia), "--list",
                  str(lists["synthia_train"])]):
        assert doctor.main(args) == 0, capsys.readouterr().out
    # the mismatched GTA5 pair was resized and reported, as for the real set
    report = json.loads((prepared.gta5 / "segda_prepare_report.json").read_text())
    assert [m["name"] for m in report["size_mismatches"]] == [miniature.GTA5_MISMATCH]


def test_polygons_and_label_ids_give_the_same_train_ids(prepared, tmp_path):
    """labelIds are drawn from the polygons as cityscapesscripts draws them, so both routes of
    prepare_cityscapes.py agree."""
    pytest.importorskip("cityscapesscripts")
    val = read_list(prepared.lists["cityscapes_val"])
    copy = tmp_path / "Cityscapes"
    for n in val:
        for folder, suffix in (("leftImg8bit", cs.IMAGE_SUFFIX), ("gtFine", cs.POLYGONS_SUFFIX)):
            src = prepared.cityscapes / folder / "val" / (cs.stem(n) + suffix)
            dst = copy / folder / "val" / (cs.stem(n) + suffix)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    cs.prepare(copy, splits=["val"], from_polygons=True, lists={"val": prepared.lists["cityscapes_val"]},
               log=lambda s: None)
    for n in val:
        name = cs.stem(n) + cs.TRAIN_IDS_SUFFIX
        a = np.asarray(Image.open(copy / "gtFine/val" / name))
        b = np.asarray(Image.open(prepared.cityscapes / "gtFine/val" / name))
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dataset", ["gta5_cityscapes", "synthia_cityscapes"])
def test_registry_builds_the_miniature(prepared, dataset):
    over = prepared.data_overrides(dataset)
    cfg = DataConfig(**{k.removeprefix("data."): v for k, v in over.items()},
                     source_size=(32, 16), target_size=(32, 16), normalization="imagenet")
    data = registry.build_datasets(cfg)
    assert len(data.train_source) == (4 if dataset == "gta5_cityscapes" else 3)
    assert len(data.train_target) == 3 and len(data.val_target) == 3
    src, tgt, val = data.train_source[0], data.train_target[0], data.val_target[0]
    assert src["image"].shape == (3, 16, 32) and src["label"].shape == (16, 32)
    assert "label" not in tgt
    assert val["label"].shape == (miniature.CITYSCAPES_SIZE[1], miniature.CITYSCAPES_SIZE[0])
    prior = data.source_prior()
    assert prior.sum() == pytest.approx(1.0) and prior[0] > 0  # road is everywhere


def test_init_checkpoint_has_the_official_keys_and_loads(mini):
    from segda.models.checkpoints import load_checkpoint
    from segda.models.deeplabv2 import DeepLabV2ResNet101

    state = torch.load(mini.init_checkpoint, map_location="cpu", weights_only=True)
    manifest = None
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared/reference/state_dict/manifest_advent_deeplabv2_single.json"
        if candidate.is_file():
            manifest = json.loads(candidate.read_text())["state_dict"]
    if manifest is not None:  # official backbone keys and shapes, then the init's classifier
        backbone = [("Scale." + k, s) for k, s in manifest
                    if not k.startswith("layer6.") and not k.endswith("num_batches_tracked")]
        assert [(k, list(v.shape)) for k, v in state.items()][: len(backbone)] == backbone
    head = {k: list(v.shape) for k, v in state.items() if k.startswith("Scale.layer5.")}
    assert head == {**{f"Scale.layer5.conv2d_list.{i}.weight": [21, 2048, 3, 3] for i in range(4)},
                    **{f"Scale.layer5.conv2d_list.{i}.bias": [21] for i in range(4)}}
    model = DeepLabV2ResNet101(multi_level=True)
    report = load_checkpoint(model, mini.init_checkpoint)
    assert report.kind == "init" and report.ok and len(report.dropped) == 8
    assert torch.equal(model.state_dict()["layer4.2.conv3.weight"],
                       state["Scale.layer4.2.conv3.weight"])


def test_make_miniature_command(tmp_path, capsys):
    out = tmp_path / "mini"
    assert load_script("make_miniature").main(["--out", str(out), "--no-init"]) == 0
    assert "prepare_gta5.py" in capsys.readouterr().out
    assert (out / "GTA5/images/00001.png").is_file() and not (out / "weights").exists()
    assert load_script("make_miniature").main(["--out", str(out), "--no-init"]) == 1
    assert f"{out} is not empty" in capsys.readouterr().err  # never writes over a folder
