"""GTA5, Cityscapes and SYNTHIA on miniature fakes in the real layouts and encodings.

Each fake is written the way the real files are: GTA5 labels as palette PNGs whose indices are
Cityscapes label ids (one pair with a label smaller than its image), Cityscapes as the
``leftImg8bit``/``gtFine`` tree with ``*_gtFine_labelIds.png``, SYNTHIA labels as 16-bit
3-channel PNGs with the class id in the first channel. Expected train ids are written out by
hand from the official tables.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segda import doctor, viz
from segda.data import cityscapes as cs
from segda.data import gta5, loaders, real, stats, synthia
from segda.data.real import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptImageError,
    CountMismatchError,
    DatasetNotFoundError,
    LabelValueError,
    MissingFilesError,
)
from segda.labels import CLASS_SUBSETS, label_id_lut

REPO = Path(__file__).resolve().parents[1]
# torchvision 0.29 marks its PNG decoder deprecated (in favour of TorchCodec); it is what the
# datasets use (16-bit support), so the notice is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

# ----------------------------------------------------------------------------------- writers


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(path)


def write_palette(path: Path, ids: np.ndarray) -> None:
    """A palette PNG whose indices are the given label ids (how GTA5 ships its labels)."""
    from cityscapesscripts.helpers.labels import id2label

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    pal = [0] * 768
    for i in range(34):
        pal[3 * i: 3 * i + 3] = id2label[i].color
    im.putpalette(pal)
    im.save(path)


def write_png16(path: Path, arr: np.ndarray) -> None:
    """A 16-bit PNG (PIL cannot write 16-bit colour PNGs, so the chunks are built here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# -------------------------------------------------------------------------------------- fakes

GTA_W, GTA_H = 48, 26  # ~1914x1052 scaled down


def gta_ids(seed: int, h: int = GTA_H, w: int = GTA_W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([0, 1, 4, 7, 8, 11, 13, 17, 21, 23, 24, 26, 29, 33], size=(h, w))


@pytest.fixture
def gta_root(tmp_path: Path) -> Path:
    root = tmp_path / "GTA5"
    rng = np.random.default_rng(0)
    for k in range(1, 5):
        name = f"{k:05d}.png"
        write_rgb(root / "images" / name, rng.integers(0, 256, (GTA_H, GTA_W, 3)))
        # 00003: label smaller than its image, as a few real GTA5 pairs are
        shape = (GTA_H - 2, GTA_W - 3) if k == 3 else (GTA_H, GTA_W)
        write_palette(root / "labels" / name, gta_ids(k, *shape))
    return root


CITY_TRAIN = cs.official_list("train")[:3]
CITY_VAL = cs.official_list("val")[:2] + cs.official_list("val")[-1:]
CS_W, CS_H = 64, 32  # 2048x1024 scaled down


@pytest.fixture
def cs_root(tmp_path: Path) -> Path:
    root = tmp_path / "Cityscapes"
    rng = np.random.default_rng(1)
    for split, names in (("train", CITY_TRAIN), ("val", CITY_VAL)):
        for n in names:
            write_rgb(root / "leftImg8bit" / split / n, rng.integers(0, 256, (CS_H, CS_W, 3)))
            ids = rng.integers(0, 34, (CS_H, CS_W)).astype(np.uint8)
            path = root / "gtFine" / split / (cs.stem(n) + cs.LABEL_IDS_SUFFIX)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ids, mode="L").save(path)
    return root


SYN_W, SYN_H = 20, 12
SYN_NAMES = ["0000000.png", "0000001.png", "0000002.png"]


def synthia_ids(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([0, 1, 2, 3, 4, 8, 12, 13, 21, 22], size=(SYN_H, SYN_W))


@pytest.fixture
def syn_root(tmp_path: Path) -> Path:
    root = tmp_path / "SYNTHIA"
    rng = np.random.default_rng(2)
    for k, n in enumerate(SYN_NAMES):
        write_rgb(root / "RGB" / n, rng.integers(0, 256, (SYN_H, SYN_W, 3)))
        lab = np.zeros((SYN_H, SYN_W, 3), dtype=np.uint16)
        lab[..., 0] = synthia_ids(k)
        lab[..., 1] = rng.integers(1000, 60000, (SYN_H, SYN_W))  # instance ids, must be ignored
        write_png16(root / "GT" / "LABELS" / n, lab)
    return root


# ------------------------------------------------------------------------------------- GTA5

# Official mapping written out (label id -> train id) for the ids the fake uses.
HAND_GTA = {0: 255, 1: 255, 4: 255, 7: 0, 8: 1, 11: 2, 13: 4, 17: 5, 21: 8, 23: 10, 24: 11,
            26: 13, 29: 255, 33: 18}


def test_gta5_prepare_converts_with_the_official_mapping(gta_root):
    report = gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    for k in (1, 2, 4):
        out = np.asarray(Image.open(gta_root / "labels" / f"{k:05d}_labelTrainIds.png"))
        expected = np.vectorize(HAND_GTA.get)(gta_ids(k))
        np.testing.assert_array_equal(out, expected)
        assert report["class_pixels"][f"{k:05d}.png"] == np.bincount(
            expected[expected < 255].ravel(), minlength=19).tolist()
    assert report["counts"] == {"images": 4, "labels": 4}
    assert len(report["missing_pairs"]) == gta5.GTA5_COUNT - 4


def test_gta5_size_mismatch_is_resized_and_reported(gta_root):
    report = gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    assert report["size_mismatches"] == [{"name": "00003.png", "image": [GTA_W, GTA_H],
                                          "label": [GTA_W - 3, GTA_H - 2], "excluded": False}]
    out = np.asarray(Image.open(gta_root / "labels" / "00003_labelTrainIds.png"))
    assert out.shape == (GTA_H, GTA_W)
    small = np.vectorize(HAND_GTA.get)(gta_ids(3, GTA_H - 2, GTA_W - 3)).astype(np.uint8)
    np.testing.assert_array_equal(
        out, np.asarray(Image.fromarray(small).resize((GTA_W, GTA_H), Image.NEAREST)))
    on_disk = json.loads((gta_root / real.REPORT_NAME).read_text())
    assert on_disk["size_mismatches"][0]["name"] == "00003.png"


def test_gta5_exclude_mismatched_drops_the_pair(gta_root):
    report = gta5.prepare(gta_root, allow_partial=True, exclude_mismatched=True,
                          log=lambda s: None)
    assert report["excluded"] == ["00003.png"]
    ds = gta5.GTA5(gta_root, ids=["00001.png", "00002.png", "00003.png", "00004.png"], size=None)
    assert ds.names == ["00001.png", "00002.png", "00004.png"]
    # switching the rule back converts the excluded pair
    report = gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    assert report["excluded"] == [] and (gta_root / "labels/00003_labelTrainIds.png").exists()


def test_gta5_counts_are_checked(gta_root):
    with pytest.raises(CountMismatchError, match="24966"):
        gta5.prepare(gta_root, log=lambda s: None)
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    with pytest.raises(CountMismatchError, match=r"4 of the 24966"):
        gta5.GTA5(gta_root)  # the full official list is expected by default


def test_gta5_item_and_official_preprocessing(gta_root):
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    ds = gta5.GTA5(gta_root, ids=["00001.png", "00002.png"], size=(24, 13))
    item = ds[1]
    assert set(item) == {"image", "label", "index", "name"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 13, 24)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (13, 24)
    assert item["index"] == 1 and item["name"] == "00002.png"
    assert set(item["label"].unique().tolist()) <= set(range(19)) | {255}
    # image: PIL bicubic, then BGR minus the caffe mean (no /255)
    rgb = np.asarray(Image.open(gta_root / "images/00002.png").resize((24, 13), Image.BICUBIC))
    expected = rgb[..., ::-1].astype(np.float32) - np.array(CAFFE_MEAN_BGR, dtype=np.float32)
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), expected, atol=1e-4)
    # label: PIL nearest of the converted label
    lab = Image.open(gta_root / "labels/00002_labelTrainIds.png").resize((24, 13), Image.NEAREST)
    np.testing.assert_array_equal(item["label"].numpy(), np.asarray(lab))


def test_caffe_and_imagenet_values_by_hand(gta_root):
    img = np.zeros((GTA_H, GTA_W, 3), dtype=np.uint8)
    img[0, 0] = (10, 20, 30)  # R, G, B
    write_rgb(gta_root / "images/00001.png", img)
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    x = gta5.GTA5(gta_root, ids=["00001.png"], size=None)[0]["image"]
    # channel 0 is blue: 30 - 104.00698793; channel 2 is red: 10 - 122.67891434
    assert x[:, 0, 0].tolist() == pytest.approx([30 - 104.00698793, 20 - 116.66876762,
                                                 10 - 122.67891434], abs=1e-5)
    y = gta5.GTA5(gta_root, ids=["00001.png"], size=None, normalization="imagenet")[0]["image"]
    hand = [(v / 255 - m) / s for v, m, s in zip((10, 20, 30), IMAGENET_MEAN, IMAGENET_STD,
                                                  strict=True)]
    assert y[:, 0, 0].tolist() == pytest.approx(hand, abs=1e-5)
    # segda.viz.to_display is the inverse (for pictures): RGB in [0, 1]
    for inp, norm in ((x, "caffe"), (y, "imagenet")):
        assert np.round(viz.to_display(inp, norm)[0, 0] * 255).tolist() == [10, 20, 30]


def test_nearest_resize_matches_pil_exactly():
    rng = np.random.default_rng(3)
    for (h, w), (H, W) in [((1052, 1914), (720, 1280)), ((1024, 2048), (512, 1024)),
                           ((64, 64), (32, 48)), ((37, 53), (91, 17))]:
        lab = rng.integers(0, 256, (h, w), dtype=np.uint8)
        ours = real.resize_label(torch.from_numpy(lab), (W, H)).numpy()
        pil = np.asarray(Image.fromarray(lab).resize((W, H), Image.NEAREST))
        np.testing.assert_array_equal(ours, pil)


def test_flip_is_deterministic_and_consistent(gta_root):
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    plain = gta5.GTA5(gta_root, ids=["00001.png"], size=None)
    flip = gta5.GTA5(gta_root, ids=["00001.png"], size=None, flip=True, flip_seed=5)
    decisions = [flip.is_flipped(0, d) for d in range(32)]
    assert 0 < sum(decisions) < 32  # the coin depends on the draw ...
    assert decisions == [flip.is_flipped(0, d) for d in range(32)]  # ... and only on it
    d = decisions.index(True)
    a, b = plain[0], flip[(0, d)]
    assert torch.equal(b["image"], a["image"].flip(-1)) and torch.equal(b["label"], a["label"].flip(-1))
    assert not plain.is_flipped(0, d)  # off by default (official: no augmentation)


def test_gta5_class_frequencies_from_report(gta_root):
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    ds = gta5.GTA5(gta_root, ids=["00001.png", "00002.png"], size=None)
    from_report = stats.class_frequencies(ds)
    (gta_root / real.REPORT_NAME).unlink()
    counted = stats.class_frequencies(gta5.GTA5(gta_root, ids=["00001.png", "00002.png"], size=None))
    np.testing.assert_allclose(from_report, counted)
    assert from_report.sum() == pytest.approx(1.0)


# -------------------------------------------------------------------------- failure messages


def test_missing_root_names_path_and_command(tmp_path):
    for cls, script in ((gta5.GTA5, "prepare_gta5.py"), (cs.Cityscapes, "prepare_cityscapes.py"),
                        (synthia.SYNTHIA, "prepare_synthia.py")):
        with pytest.raises(DatasetNotFoundError) as err:
            cls(tmp_path / "nowhere")
        assert str(tmp_path / "nowhere") in str(err.value) and script in str(err.value)


def test_missing_files_are_named(gta_root):
    with pytest.raises(MissingFilesError, match="prepare_gta5.py"):
        gta5.GTA5(gta_root, ids=["00001.png"])  # labels not converted yet
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    with pytest.raises(MissingFilesError, match="00009.png"):
        gta5.GTA5(gta_root, ids=["00001.png", "00009.png"])


def test_label_values_outside_train_ids_raise(gta_root):
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    bad = gta_root / "labels/00002_labelTrainIds.png"
    arr = np.asarray(Image.open(bad)).copy()
    arr[0, 0] = 40
    Image.fromarray(arr, mode="L").save(bad)
    ds = gta5.GTA5(gta_root, ids=["00001.png", "00002.png"], size=None)
    ds[0]
    with pytest.raises(LabelValueError, match=r"00002_labelTrainIds.png.*\[40\]"):
        ds[1]


def test_unknown_gta5_label_ids_map_to_ignore_or_fail(gta_root):
    ids = gta_ids(1)
    ids[0, 0] = 40
    write_palette(gta_root / "labels/00001.png", ids)
    report = gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    assert report["unknown_label_ids"] == {"00001.png": [40]}
    assert np.asarray(Image.open(gta_root / "labels/00001_labelTrainIds.png"))[0, 0] == 255
    with pytest.raises(LabelValueError, match="00001.png"):
        gta5.prepare(gta_root, allow_partial=True, strict_ids=True, overwrite=True,
                     log=lambda s: None)


def test_colour_gta5_label_is_refused(gta_root):
    write_rgb(gta_root / "labels/00002.png", np.zeros((GTA_H, GTA_W, 3)))
    with pytest.raises(LabelValueError, match="palette"):
        gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)


def test_truncated_image_error_names_the_file(gta_root):
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    truncate(gta_root / "images/00002.png")
    ds = gta5.GTA5(gta_root, ids=["00001.png", "00002.png"], size=None)
    with pytest.raises(CorruptImageError, match="00002.png"):
        ds[1]
    truncate(gta_root / "labels/00004.png")
    with pytest.raises(real.DatasetError, match="00004.png"):
        gta5.prepare(gta_root, allow_partial=True, overwrite=True, log=lambda s: None)


def test_label_image_size_mismatch_at_load_is_refused(gta_root):
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    write_rgb(gta_root / "images/00001.png", np.zeros((GTA_H + 1, GTA_W, 3)))
    with pytest.raises(real.SizeMismatchError, match="00001"):
        gta5.GTA5(gta_root, ids=["00001.png"])[0]


# -------------------------------------------------------------------------------- Cityscapes


def test_cityscapes_lut_is_cityscapesscripts_table():
    lut = cs.label_id_to_train_id_lut()
    np.testing.assert_array_equal(lut, label_id_lut())
    assert (lut[7], lut[24], lut[33], lut[0], lut[29], lut[30]) == (0, 11, 18, 255, 255, 255)


def test_cityscapes_prepare_and_val_keeps_full_resolution(cs_root):
    report = cs.prepare(cs_root, allow_partial=True, log=lambda s: None)
    name = CITY_VAL[0]
    ids = np.asarray(Image.open(cs_root / "gtFine/val" / (cs.stem(name) + cs.LABEL_IDS_SUFFIX)))
    train = np.asarray(Image.open(cs_root / "gtFine/val" / (cs.stem(name) + cs.TRAIN_IDS_SUFFIX)))
    np.testing.assert_array_equal(train, label_id_lut()[ids])
    assert report["splits"]["val"]["images"] == 3
    val = cs.Cityscapes(cs_root, split="val", names=CITY_VAL, size=(32, 16))
    item = val[0]
    assert item["image"].shape == (3, 16, 32)
    assert item["label"].shape == (CS_H, CS_W)  # label_size=None: original resolution
    np.testing.assert_array_equal(item["label"].numpy(), train)
    assert item["name"] == name


def test_cityscapes_train_has_no_labels_by_default(cs_root):
    train = cs.Cityscapes(cs_root, split="train", names=CITY_TRAIN, size=(32, 16))
    assert "label" not in train[0] and not train.has_labels
    cs.prepare(cs_root, allow_partial=True, log=lambda s: None)
    oracle = cs.Cityscapes(cs_root, split="train", names=CITY_TRAIN, size=(32, 16),
                           with_labels=True)
    assert oracle[2]["label"].shape == (16, 32)


def test_cityscapes_from_polygons_uses_cityscapesscripts(cs_root):
    name = CITY_VAL[0]
    poly = {"imgHeight": CS_H, "imgWidth": CS_W, "objects": [
        {"label": "road", "polygon": [[0, 0], [CS_W - 1, 0], [CS_W - 1, CS_H - 1], [0, CS_H - 1]]},
        {"label": "car", "polygon": [[2, 2], [10, 2], [10, 8], [2, 8]]},
    ]}
    for n in CITY_VAL:
        (cs_root / "gtFine/val" / (cs.stem(n) + cs.POLYGONS_SUFFIX)).write_text(json.dumps(poly))
    cs.prepare(cs_root, splits=["val"], from_polygons=True, allow_partial=True,
               log=lambda s: None)
    train = np.asarray(Image.open(cs_root / "gtFine/val" / (cs.stem(name) + cs.TRAIN_IDS_SUFFIX)))
    assert train[0, CS_W // 2] == 0 and train[5, 5] == 13  # road, car


def test_cityscapes_counts_and_layout_errors(cs_root, tmp_path):
    with pytest.raises(CountMismatchError, match="2975"):
        cs.Cityscapes(cs_root, split="train")
    with pytest.raises(CountMismatchError):
        cs.prepare(cs_root, log=lambda s: None)
    with pytest.raises(MissingFilesError, match="prepare_cityscapes.py"):
        cs.Cityscapes(cs_root, split="val", names=CITY_VAL)  # not converted yet
    nested = tmp_path / "asn"
    (nested / "data" / "leftImg8bit").mkdir(parents=True)
    with pytest.raises(MissingFilesError, match="AdaptSegNet"):
        cs.Cityscapes(nested, split="val")


def test_split_lists():
    train, val = cs.official_list("train"), cs.official_list("val")
    assert len(train) == len(set(train)) == 2975 and len(val) == len(set(val)) == 500
    assert len({n.split("/")[0] for n in train}) == 18
    cities = [n.split("/")[0] for n in val]
    assert {c: cities.count(c) for c in set(cities)} == {"frankfurt": 267, "munster": 174,
                                                         "lindau": 59}
    labels = (REPO / "lib/segda/splits/cityscapes_val_labels.txt").read_text().split()
    assert labels == [cs.stem(n) + cs.LABEL_IDS_SUFFIX for n in val]
    assert gta5.official_ids() == [f"{i:05d}.png" for i in range(1, 24967)]
    for f in (REPO / "lib/segda/splits").glob("*.txt"):
        assert f.read_text().endswith("\n")


# ----------------------------------------------------------------------------------- SYNTHIA

# DAFormer's table written out for the ids the fake uses (SYNTHIA id -> train id).
HAND_SYN = {0: 255, 1: 10, 2: 2, 3: 0, 4: 1, 8: 13, 12: 17, 13: 255, 21: 3, 22: 255}


def test_pil_cannot_read_synthia_labels(syn_root):
    """Why the loader uses torchvision: PIL turns the 16-bit label into 8-bit garbage."""
    pil = np.asarray(Image.open(syn_root / "GT/LABELS" / SYN_NAMES[0]))
    assert not np.array_equal(pil[..., 0], synthia_ids(0))
    np.testing.assert_array_equal(synthia.read_synthia_ids(syn_root / "GT/LABELS" / SYN_NAMES[0]),
                                  synthia_ids(0))


def test_synthia_prepare_and_protocols(syn_root):
    synthia.prepare(syn_root, allow_partial=True, log=lambda s: None)
    for k, n in enumerate(SYN_NAMES):
        out = np.asarray(Image.open(syn_root / "GT/LABELS" / synthia.train_id_name(n)))
        np.testing.assert_array_equal(out, np.vectorize(HAND_SYN.get)(synthia_ids(k)))
    ds19 = synthia.SYNTHIA(syn_root, ids=SYN_NAMES)
    ds13 = synthia.SYNTHIA(syn_root, ids=SYN_NAMES, classes=13)
    ds16 = synthia.SYNTHIA(syn_root, ids=SYN_NAMES, classes=16)
    l19, l13, l16 = ds19[0]["label"], ds13[0]["label"], ds16[0]["label"]
    assert ds19[0]["image"].shape == (3, SYN_H, SYN_W)  # native size: no resize
    wall = l19 == 3
    assert wall.any() and (l13[wall] == 255).all() and (l16[wall] == 3).all()
    keep13 = torch.isin(l19, torch.tensor(CLASS_SUBSETS[13]))
    assert torch.equal(l13[keep13], l19[keep13])


def test_synthia_counts_and_unknown_ids(syn_root):
    with pytest.raises(CountMismatchError, match="9400"):
        synthia.prepare(syn_root, log=lambda s: None)
    synthia.prepare(syn_root, allow_partial=True, log=lambda s: None)
    with pytest.raises(CountMismatchError, match="9400"):
        synthia.SYNTHIA(syn_root)
    lab = np.zeros((SYN_H, SYN_W, 3), dtype=np.uint16)
    lab[..., 0] = 300
    write_png16(syn_root / "GT/LABELS" / SYN_NAMES[1], lab)
    with pytest.raises(LabelValueError, match="0000001.png"):
        synthia.prepare(syn_root, allow_partial=True, strict_ids=True, overwrite=True,
                        log=lambda s: None)


# ----------------------------------------------------------------------------------- loaders


def test_infinite_sampler_is_stateless_and_resumes():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    full = take(loaders.InfiniteSampler(7, seed=3), 30)
    assert take(loaders.InfiniteSampler(7, seed=3, start=12), 18) == full[12:]
    for e in range(4):
        assert sorted(full[7 * e: 7 * e + 7]) == list(range(7)) if 7 * e + 7 <= 30 else True
    assert full[:7] != full[7:14]  # a new order every epoch
    assert take(loaders.InfiniteSampler(7, seed=4), 7) != full[:7]
    pairs = take(loaders.InfiniteSampler(7, seed=3, start=5, with_position=True), 3)
    assert pairs == [(full[5], 5), (full[6], 6), (full[7], 7)]


def test_build_loader_resumes_exactly_with_flips(gta_root):
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    ds = gta5.GTA5(gta_root, ids=["00001.png", "00002.png", "00004.png"], size=(12, 8),
                   flip=True, flip_seed=1)
    first = loaders.build_loader(ds, batch_size=2, seed=9)
    batches = [next(first) for _ in range(4)]
    resumed = loaders.build_loader(ds, batch_size=2, seed=9, start_iter=2)
    for want in batches[2:]:
        got = next(resumed)
        assert got["name"] == want["name"]
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["label"], want["label"])
    assert batches[0]["image"].shape == (2, 3, 8, 12) and batches[0]["label"].dtype == torch.int64


def test_build_loader_with_a_worker(gta_root):
    gta5.prepare(gta_root, allow_partial=True, log=lambda s: None)
    ds = gta5.GTA5(gta_root, ids=["00001.png", "00002.png"], size=(12, 8))
    a = loaders.build_loader(ds, batch_size=2, seed=0, num_workers=1)
    b = loaders.build_loader(ds, batch_size=2, seed=0)
    assert torch.equal(next(a)["image"], next(b)["image"])


# ------------------------------------------------------------------------------------ doctor


def test_doctor_exit_codes(gta_root, cs_root, syn_root, tmp_path, monkeypatch, capsys):
    assert doctor.run("gta5", tmp_path / "nowhere") == 1
    # shrink the official counts to the fakes so that a prepared fake is "complete"
    monkeypatch.setattr(gta5, "GTA5_COUNT", 4)
    monkeypatch.setattr(gta5, "official_ids", lambda: [f"{k:05d}.png" for k in range(1, 5)])
    assert doctor.run("gta5", gta_root) == 1
    assert "prepare_gta5.py" in capsys.readouterr().out
    gta5.prepare(gta_root, log=lambda s: None)
    assert doctor.run("gta5", gta_root) == 0
    assert "00003.png" in capsys.readouterr().out  # the size mismatch is reported

    monkeypatch.setattr(cs, "official_list", lambda s: {"train": CITY_TRAIN, "val": CITY_VAL}[s])
    assert doctor.run("cityscapes", cs_root) == 1  # val labels not converted
    cs.prepare(cs_root, log=lambda s: None)
    assert doctor.run("cityscapes", cs_root) == 0

    monkeypatch.setattr(synthia, "SYNTHIA_COUNT", 3)
    assert doctor.run("synthia", syn_root) == 1
    synthia.prepare(syn_root, log=lambda s: None)
    assert doctor.run("synthia", syn_root) == 0
    truncate(syn_root / "RGB" / SYN_NAMES[0])
    assert doctor.run("synthia", syn_root) == 1
    assert "0000000.png" in capsys.readouterr().out


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "data_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripts_exit_codes(gta_root, tmp_path, capsys):
    assert doctor.main(["--dataset", "cityscapes", "--root", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().out
    prep = load_script("prepare_gta5")
    assert prep.main(["--root", str(gta_root)]) == 1
    assert "24966" in capsys.readouterr().err
    assert prep.main(["--root", str(gta_root), "--allow-partial"]) == 0
    for name in ("prepare_gta5", "prepare_cityscapes", "prepare_synthia", "download_weights",
                 "doctor"):
        with pytest.raises(SystemExit) as done:
            load_script(name).main(["--help"])
        assert done.value.code == 0


def test_doctor_wrapper_runs_as_a_script(gta_root):
    """One real process: `python data_scripts/doctor.py` works from a fresh interpreter."""
    run = subprocess.run(
        [sys.executable, str(REPO / "data_scripts/doctor.py"), "--dataset", "gta5", "--root",
         str(gta_root)], capture_output=True, text=True)
    assert run.returncode == 1 and "[PROBLEM]" in run.stdout
