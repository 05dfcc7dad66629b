"""Data-pipeline throughput at the papers' sizes: images per second per worker count.

Writes generated PNG files in the real layouts to a temporary folder (GTA5: 1914x1052 images and
train-id labels, ``<root>/images`` and ``<root>/labels``; Cityscapes: 2048x1024 images,
``<root>/leftImg8bit/train/<city>/``), then reads them through the library's own datasets
(:class:`segda.data.gta5.GTA5` at 1280x720 with labels, :class:`segda.data.cityscapes.Cityscapes`
at 1024x512 without) and :func:`segda.data.loaders.build_loader`, batch 1, pinned memory when a
GPU is present: exactly what a training run's loaders do. The images are smooth colour fields
with edges and sensor-like noise, so that PNG decoding costs about what real frames cost; a few
distinct files are hard-linked to the requested count (the page cache holds them, as it holds a
dataset that fits in memory).

It also breaks one image's pre-processing into stages (PNG decode, PIL bicubic resize, label
resize, normalisation) in the main process, and measures an alternative resize
(``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` on the uint8 image in
channels-last layout, torch's PIL-compatible path) against PIL's bicubic,
which the datasets use because the official code does: time and pixel difference.

    python benchmarks/loader.py --workers 0 1 2
    python benchmarks/loader.py --workers 1 2 4 8 16 --images 128 --distinct 16
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import report  # benchmarks/report.py (scripts run as python benchmarks/<name>.py)
import torch
import torch.nn.functional as F
from PIL import Image

from segda import repro
from segda.data import cityscapes, gta5, real
from segda.data.loaders import build_loader

GTA5_SIZE = (1914, 1052)  # (W, H) of most GTA5 frames
CITYSCAPES_SIZE = (2048, 1024)


def synthetic_frame(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """An RGB frame that compresses about like a photo: smooth colours, edges, noise."""
    w, h = size
    coarse = rng.integers(0, 256, (9, 16, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
    for _ in range(40):  # buildings, cars, poles: flat regions with hard edges
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(10, w // 4)), y0 + int(rng.integers(10, h // 4))
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * 0.3 + rng.integers(0, 256, 3) * 0.7
    img += rng.normal(0, 4.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_label(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    label = np.full((h, w), 255, np.uint8)
    for _ in range(60):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        label[y0:y0 + int(rng.integers(20, h // 3)), x0:x0 + int(rng.integers(20, w // 3))] = (
            rng.integers(0, 19))
    return label


def _fill(paths: list[Path], make, distinct: int) -> None:
    """Write ``distinct`` files, hard-link (or copy) them to every path."""
    firsts = []
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        if i < distinct:
            Image.fromarray(make(i)).save(path)
            firsts.append(path)
        else:
            try:
                os.link(firsts[i % distinct], path)
            except OSError:
                path.write_bytes(firsts[i % distinct].read_bytes())


def write_gta5(root: Path, n: int, distinct: int) -> list[str]:
    ids = [f"{i:05d}.png" for i in range(1, n + 1)]
    _fill([root / "images" / i for i in ids],
          lambda i: synthetic_frame(np.random.default_rng(i), GTA5_SIZE), distinct)
    _fill([root / "labels" / gta5.train_id_name(i) for i in ids],
          lambda i: synthetic_label(np.random.default_rng(1000 + i), GTA5_SIZE), distinct)
    return ids


def write_cityscapes(root: Path, n: int, distinct: int) -> list[str]:
    names = cityscapes.official_list("train")[:n]
    _fill([root / "leftImg8bit" / "train" / name for name in names],
          lambda i: synthetic_frame(np.random.default_rng(2000 + i), CITYSCAPES_SIZE), distinct)
    return names


def throughput(dataset, workers: int, batches: int, seconds: float, pin: bool) -> float:
    """Images per second of a batch-1 loader after its workers are up and warm: at least
    ``batches`` batches and at least ``seconds`` seconds."""
    loader = build_loader(dataset, batch_size=1, seed=0, num_workers=workers, pin_memory=pin)
    for _ in range(max(2, 2 * workers)):
        next(loader)
    t = time.perf_counter()
    n = 0
    while n < batches or time.perf_counter() - t < seconds:
        next(loader)
        n += 1
    rate = n / (time.perf_counter() - t)
    del loader
    return rate


def stage_times(dataset, n: int) -> dict[str, float]:
    """Milliseconds per image of each pre-processing stage, in this process."""
    out: dict[str, list[float]] = {"decode": [], "resize (PIL bicubic)": [], "normalize": [],
                                   "label read + resize": []}
    for i in range(n):
        t = time.perf_counter()
        image = real.read_rgb(dataset.images[i])
        out["decode"].append(time.perf_counter() - t)
        t = time.perf_counter()
        image = real.resize_image(image, dataset.size)
        out["resize (PIL bicubic)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        real.normalize(image, dataset.normalization)
        out["normalize"].append(time.perf_counter() - t)
        if dataset.labels is not None:
            t = time.perf_counter()
            real.resize_label(real.read_label(dataset.labels[i]), dataset.size)
            out["label read + resize"].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v) for k, v in out.items() if v}


def torch_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic + antialias on the uint8 image, channels-last: torch's PIL-compatible CPU path."""
    w, h = size
    x = image.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)[0]


def resize_comparison(dataset, n: int) -> dict[str, float]:
    pil, tch, diffs = [], [], []
    for i in range(n):
        image = real.read_rgb(dataset.images[i])
        t = time.perf_counter()
        a = real.resize_image(image, dataset.size)
        pil.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = torch_resize(image, dataset.size)
        tch.append(time.perf_counter() - t)
        diffs.append((a.int() - b.int()).abs())
    d = torch.stack(diffs).float()
    return {"pil_ms": 1000 * statistics.median(pil), "torch_ms": 1000 * statistics.median(tch),
            "max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "share_differing": float((d > 0).float().mean())}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--images", type=int, default=64, help="files per dataset")
    p.add_argument("--distinct", type=int, default=8, help="distinct files per dataset")
    p.add_argument("--batches", type=int, default=16, help="at least this many timed batches")
    p.add_argument("--seconds", type=float, default=5.0, help="and at least this long")
    p.add_argument("--stage-images", type=int, default=6)
    p.add_argument("--root", default=None, help="where to write the files (default: a temp dir)")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--out", default=None, help="append the tables to this Markdown file")
    args = p.parse_args(argv)
    pin = torch.cuda.is_available() and not args.no_pin
    with report.emitter(args.out) as emit:
        tmp = None
        if args.root is None:
            tmp = tempfile.TemporaryDirectory(prefix="segda_loader_")
            root = Path(tmp.name)
        else:
            root = Path(args.root)
        torch.set_num_threads(1)  # what a loader worker gets; the main process decodes alone too
        t = time.perf_counter()
        ids = write_gta5(root / "gta5", args.images, args.distinct)
        names = write_cityscapes(root / "cityscapes", args.images, args.distinct)
        made = time.perf_counter() - t
        sets = {
            "GTA5 1914x1052 -> 1280x720 (+ label)": gta5.GTA5(root / "gta5", ids=ids),
            "Cityscapes 2048x1024 -> 1024x512": cityscapes.Cityscapes(root / "cityscapes", "train",
                                                                      names=names),
        }
        sizes = {k: np.mean([os.path.getsize(ds.images[i]) for i in range(args.distinct)]) / 2**20
                 for k, ds in sets.items()}
        env = repro.environment()
        emit("\n## Data-pipeline benchmark\n")
        emit(f"- machine: {os.cpu_count()} CPU cores ({env['platform']}); torch {torch.__version__}; "
             f"pin_memory={pin}; batch 1; timed for >= {args.seconds:g} s and >= {args.batches} batches "
             f"after a warm-up; load average before the run {os.getloadavg()[0]:.1f}")
        emit(f"- files: {args.images} per dataset ({args.distinct} distinct, hard-linked), written in "
             f"{made:.0f} s; mean PNG size " + ", ".join(f"{k.split()[0]} {v:.1f} MiB"
                                                        for k, v in sizes.items()))
        emit(f"- command: `{' '.join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]])}`\n")
        emit("| dataset | workers | images / s | images / s per worker |")
        emit("|---|---|---|---|")
        rates: dict[str, dict[int, float]] = {}
        for name, ds in sets.items():
            for w in args.workers:
                rate = throughput(ds, w, args.batches, args.seconds, pin)
                rates.setdefault(name, {})[w] = rate
                per = rate / max(w, 1)
                emit(f"| {name} | {w} | {rate:.1f} | {per:.1f} |")
        emit("\n| dataset | stage | ms / image (one core) |")
        emit("|---|---|---|")
        for name, ds in sets.items():
            for stage, ms in stage_times(ds, args.stage_images).items():
                emit(f"| {name} | {stage} | {ms:.1f} |")
        emit("\n| dataset | PIL bicubic ms | torch uint8 bicubic+antialias ms | max abs diff (0..255) | "
             "mean abs diff | pixels differing |")
        emit("|---|---|---|---|---|---|")
        for name, ds in sets.items():
            c = resize_comparison(ds, args.stage_images)
            emit(f"| {name} | {c['pil_ms']:.1f} | {c['torch_ms']:.1f} | {c['max_abs']:.0f} | "
                 f"{c['mean_abs']:.3f} | {100 * c['share_differing']:.1f}% |")
        one = {k: v.get(1) or v.get(0) for k, v in rates.items()}
        if all(one.values()):
            g, c = one.values()
            emit(f"\nOne iteration needs one image of each dataset per GPU: with one worker each "
                 f"process supplies about {1 / (1 / g + 1 / c):.1f} iterations/s per core, so "
                 f"N iterations/s per GPU need about N / {1 / (1 / g + 1 / c):.1f} worker cores.")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
