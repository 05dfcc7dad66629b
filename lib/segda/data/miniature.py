"""Miniature raw datasets in the official layouts, to check a setup before the real data.

:func:`make_miniature` writes, under one folder (a ``DataConfig.root``)::

    GTA5/images/NNNNN.png, GTA5/labels/NNNNN.png       palette PNGs whose indices are Cityscapes
                                                       label ids; 00003's label is smaller than
                                                       its image, as a few real pairs are
    Cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    Cityscapes/gtFine/{train,val}/<city>/..._gtFine_labelIds.png and ..._gtFine_polygons.json
    SYNTHIA/RGB/NNNNNNN.png, SYNTHIA/GT/LABELS/NNNNNNN.png
                                                       16-bit, 3 channels: class id, instance id
    lists/{gta5_train,cityscapes_train,cityscapes_val,synthia_train}.txt
                                                       the subsets, in the official list format
    weights/DeepLab_resnet_pretrained_init_miniature.pth
                                                       random weights under the official DeepLab
                                                       init's keys (``Scale.`` prefix, backbone,
                                                       a 2048-channel ``layer5`` classifier)

File names, folder structure and label encodings are the real ones (see the dataset modules);
only the images are small (64x32 to 64x38) and few, so that preparing, checking, loading and
evaluating all run on a CPU in seconds. The Cityscapes ``labelIds`` are drawn from the same
polygons as the JSON files with the same PIL polygon fill as cityscapesscripts'
``json2labelImg``, so both label routes of ``prepare_cityscapes.py`` give the same train ids.
The lists keep the official count checks from firing (see ``DataConfig.source_list``).

Used by ``python data_scripts/make_miniature.py --out DIR`` and by the tests.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from segda.labels import IGNORE_INDEX, PALETTE, label_id_lut

# Sizes: the real ones divided by about 30 (GTA5 ~1914x1052, Cityscapes 2048x1024, SYNTHIA
# 1280x760).
GTA5_SIZE, CITYSCAPES_SIZE, SYNTHIA_SIZE = (64, 35), (64, 32), (64, 38)
GTA5_MISMATCH = "00003.png"  # its label is 2x1 pixels smaller than its image
INIT_NAME = "DeepLab_resnet_pretrained_init_miniature.pth"
INIT_CLASSES = 21  # outputs of the init's own classifier, which training drops
# Cityscapes label ids (cityscapesscripts' table) and SYNTHIA class ids (its README.txt) of the
# classes the scenes draw; "ego vehicle" only in Cityscapes, lane markings only in SYNTHIA.
CITYSCAPES_IDS = {"unlabeled": 0, "ego vehicle": 1, "road": 7, "sidewalk": 8, "building": 11,
                  "pole": 17, "vegetation": 21, "sky": 23, "person": 24, "car": 26}
SYNTHIA_IDS = {"unlabeled": 0, "sky": 1, "building": 2, "road": 3, "sidewalk": 4,
               "vegetation": 6, "pole": 7, "car": 8, "person": 10, "lanemarking": 22}

Polygon = list[tuple[int, int]]


@dataclass(frozen=True)
class Miniature:
    """Where :func:`make_miniature` put everything."""

    root: Path
    lists: dict[str, Path]  # gta5_train, cityscapes_train, cityscapes_val, synthia_train
    init_checkpoint: Path | None

    @property
    def gta5(self) -> Path:
        return self.root / "GTA5"

    @property
    def cityscapes(self) -> Path:
        return self.root / "Cityscapes"

    @property
    def synthia(self) -> Path:
        return self.root / "SYNTHIA"

    def data_overrides(self, dataset: str = "gta5_cityscapes") -> dict[str, str]:
        """Config overrides (``data.*``) that train or evaluate on the miniature."""
        source = "gta5_train" if dataset == "gta5_cityscapes" else "synthia_train"
        return {"data.dataset": dataset, "data.root": str(self.root),
                "data.source_list": str(self.lists[source]),
                "data.target_list": str(self.lists["cityscapes_train"]),
                "data.val_list": str(self.lists["cityscapes_val"])}


# ------------------------------------------------------------------------------------ writers


def write_png16(path: Path, array: np.ndarray) -> None:
    """A 16-bit PNG of an ``(H, W, C)`` array, C in {1, 3, 4} (PIL cannot write 16-bit colour
    PNGs, so the chunks are assembled here: IHDR, one zlib-compressed IDAT, IEND)."""
    h, w, c = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))  # filter 0

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    colour_type = {1: 0, 3: 2, 4: 6}[c]  # grey, RGB, RGBA
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_palette_png(path: Path, ids: np.ndarray) -> None:
    """A palette PNG whose indices are Cityscapes label ids, coloured as Cityscapes colours its
    train classes (how GTA5 ships its labels; the colours are only for display)."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    lut = label_id_lut()
    known = lut != IGNORE_INDEX
    colours[known] = np.asarray(PALETTE, dtype=np.uint8)[lut[known]]
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(colours.ravel().tolist())  # a full palette: PIL keeps the indices
    image.save(path)


# ------------------------------------------------------------------------------------- scenes


def _rect(x0: int, y0: int, x1: int, y1: int) -> Polygon:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _scene(rng: np.random.Generator, w: int, h: int, ego: bool) -> list[tuple[str, Polygon]]:
    """A street scene as (class name, polygon) pairs in drawing order (later ones on top)."""
    horizon = int(h * rng.uniform(0.35, 0.5))
    vx = int(w * rng.uniform(0.4, 0.6))
    objects = [("sky", _rect(0, 0, w - 1, horizon))]
    x = 0
    while x < w:
        width = int(rng.integers(w // 8, w // 4 + 1))
        top = int(rng.integers(1, max(2, horizon - 2)))
        cls = "vegetation" if rng.random() < 0.35 else "building"
        objects.append((cls, _rect(x, top, min(x + width, w) - 1, horizon)))
        x += width
    objects.append(("sidewalk", [(0, h - 1), (0, horizon + 2), (vx, horizon), (w - 1, horizon + 2),
                                 (w - 1, h - 1)]))
    objects.append(("road", [(int(w * 0.12), h - 1), (vx - 1, horizon), (vx + 1, horizon),
                             (int(w * 0.88), h - 1)]))
    cx, cy = int(w * rng.uniform(0.3, 0.6)), int(horizon + (h - horizon) * rng.uniform(0.4, 0.7))
    objects.append(("car", _rect(cx, cy - h // 8, cx + w // 6, cy)))
    px = int(w * rng.uniform(0.02, 0.1))
    objects.append(("person", _rect(px, horizon, px + 2, horizon + h // 5)))
    qx = int(w * rng.uniform(0.85, 0.95))
    objects.append(("pole", _rect(qx, horizon // 2, qx + 1, horizon + 3)))
    if ego:  # the bonnet at the bottom of every Cityscapes frame
        objects.append(("ego vehicle", _rect(0, h - 1 - h // 10, w - 1, h - 1)))
    return objects


def _scaled(objects: list[tuple[str, Polygon]], sx: float, sy: float) -> list[tuple[str, Polygon]]:
    return [(cls, [(round(x * sx), round(y * sy)) for x, y in poly]) for cls, poly in objects]


def _draw(objects: list[tuple[str, Polygon]], size: tuple[int, int], ids: dict[str, int]) -> np.ndarray:
    """The label map: ``ids["unlabeled"]`` everywhere, then each polygon filled with its id,
    as cityscapesscripts' ``json2labelImg`` draws (``ImageDraw.polygon(points, fill=id)``)."""
    image = Image.new("L", size, ids["unlabeled"])
    draw = ImageDraw.Draw(image)
    for cls, poly in objects:
        draw.polygon(poly, fill=ids[cls])
    return np.asarray(image)


def _photo(rng: np.random.Generator, cityscapes_ids: np.ndarray, noise: float) -> np.ndarray:
    """An RGB image of a label-id map: each class in its Cityscapes colour, plus noise."""
    train = label_id_lut()[cityscapes_ids]
    colours = np.zeros((256, 3), dtype=np.float32)
    colours[: len(PALETTE)] = np.asarray(PALETTE, dtype=np.float32)
    colours[IGNORE_INDEX] = 40.0
    rgb = colours[train] + rng.normal(0.0, noise, (*train.shape, 3))
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path)


def _write_list(path: Path, names: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))
    return path


# ----------------------------------------------------------------------------------- datasets


def _gta5(root: Path, rng: np.random.Generator, frames: int) -> list[str]:
    w, h = GTA5_SIZE
    names = [f"{k:05d}.png" for k in range(1, frames + 1)]
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for name in names:
        scene = _scene(rng, w, h, ego=False)
        ids = _draw(scene, (w, h), CITYSCAPES_IDS)
        _save_rgb(root / "images" / name, _photo(rng, ids, noise=6.0))
        if name == GTA5_MISMATCH:
            lw, lh = w - 2, h - 1
            ids = _draw(_scaled(scene, (lw - 1) / (w - 1), (lh - 1) / (h - 1)), (lw, lh),
                        CITYSCAPES_IDS)
        write_palette_png(root / "labels" / name, ids)
    return names


def _cityscapes(root: Path, rng: np.random.Generator, n_train: int) -> dict[str, list[str]]:
    from segda.data import cityscapes as cs

    w, h = CITYSCAPES_SIZE
    val = cs.official_list("val")
    first_per_city = {}
    for name in val:
        first_per_city.setdefault(name.split("/")[0], name)
    splits = {"train": cs.official_list("train")[:n_train], "val": sorted(first_per_city.values())}
    for split, names in splits.items():
        for name in names:
            scene = _scene(rng, w, h, ego=True)
            ids = _draw(scene, (w, h), CITYSCAPES_IDS)
            _save_rgb(root / "leftImg8bit" / split / name, _photo(rng, ids, noise=14.0))
            gt = root / "gtFine" / split / cs.stem(name)
            gt.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ids, mode="L").save(f"{gt}{cs.LABEL_IDS_SUFFIX}")
            polygons = {"imgHeight": h, "imgWidth": w, "objects": [
                {"label": cls, "polygon": [list(p) for p in poly]} for cls, poly in scene]}
            Path(f"{gt}{cs.POLYGONS_SUFFIX}").write_text(json.dumps(polygons))
    return splits


def _synthia(root: Path, rng: np.random.Generator, frames: int) -> list[str]:
    w, h = SYNTHIA_SIZE
    names = [f"{k:07d}.png" for k in range(frames)]
    (root / "GT" / "LABELS").mkdir(parents=True)
    for name in names:
        scene = _scene(rng, w, h, ego=False)
        scene.append(("lanemarking", _rect(w // 2, h - 6, w // 2 + 1, h - 2)))
        class_ids = _draw(scene, (w, h), SYNTHIA_IDS)
        photo_ids = _draw(scene[:-1], (w, h), CITYSCAPES_IDS)  # colours only
        _save_rgb(root / "RGB" / name, _photo(rng, photo_ids, noise=3.0))
        label = np.zeros((h, w, 3), dtype=np.uint16)
        label[..., 0] = class_ids
        label[..., 1] = rng.integers(1, 60000, (h, w))  # instance ids, which prepare ignores
        write_png16(root / "GT" / "LABELS" / name, label)
    return names


# -------------------------------------------------------------------------------- init weights


def write_init_checkpoint(path: Path, seed: int = 0) -> Path:
    """Random weights under the official DeepLab-v2 init's keys and shapes.

    The keys are those of ``DeepLab_resnet_pretrained_init-f81d91e8.pth``: the single-level
    model's backbone with a ``Scale.`` prefix and no ``num_batches_tracked`` (a PyTorch-0.3
    file), plus the init's own classifier ``Scale.layer5`` (four 3x3 convs, 2048 -> 21
    channels), which training drops. Convolutions are N(0, 0.01) as in the official
    ``__init__``; batch norms are the identity (weight 1, bias 0, mean 0, variance 1).
    """
    from segda.models.deeplabv2 import DeepLabV2ResNet101

    with torch.device("meta"):  # shapes only, no memory
        model = DeepLabV2ResNet101(multi_level=False)
    heads = tuple(f"{name}." for name, m in model.named_children() if m in model.head_roots())
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, meta in model.state_dict().items():
        if key.startswith(heads) or key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var") or (meta.dim() == 1 and key.endswith("weight")):
            value = torch.ones(meta.shape)
        elif meta.dim() == 1:  # BN bias and running mean
            value = torch.zeros(meta.shape)
        else:
            value = torch.randn(meta.shape, generator=gen) * 0.01
        state[f"Scale.{key}"] = value
    for i in range(4):
        state[f"Scale.layer5.conv2d_list.{i}.weight"] = (
            torch.randn(INIT_CLASSES, 2048, 3, 3, generator=gen) * 0.01)
        state[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.zeros(INIT_CLASSES)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# ---------------------------------------------------------------------------------------- all


def make_miniature(out: str | Path, seed: int = 0, gta5_frames: int = 4,
                   cityscapes_train: int = 3, synthia_frames: int = 3,
                   init: bool = True) -> Miniature:
    """Write the miniature datasets (see the module docstring) into ``out``, which must not
    exist or be empty (so that real data is never overwritten). ``init=False`` skips the
    init checkpoint (176 MB, like the real file: the shapes are the real ones)."""
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file; give a new folder for the miniature datasets")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; give a new folder for the miniature datasets")
    rng = np.random.default_rng(seed)
    gta = _gta5(root / "GTA5", rng, gta5_frames)
    city = _cityscapes(root / "Cityscapes", rng, cityscapes_train)
    syn = _synthia(root / "SYNTHIA", rng, synthia_frames)
    lists = {
        "gta5_train": _write_list(root / "lists" / "gta5_train.txt", gta),
        "cityscapes_train": _write_list(root / "lists" / "cityscapes_train.txt", city["train"]),
        "cityscapes_val": _write_list(root / "lists" / "cityscapes_val.txt", city["val"]),
        "synthia_train": _write_list(root / "lists" / "synthia_train.txt", syn),
    }
    checkpoint = write_init_checkpoint(root / "weights" / INIT_NAME, seed) if init else None
    return Miniature(root=root, lists=lists, init_checkpoint=checkpoint)
