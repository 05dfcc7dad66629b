"""Dataset names accepted by configs and notebooks, and what each one builds.

``embedded`` (default): the procedurally generated two-domain benchmark, no files needed.
``gta5_cityscapes``: GTA5 (source) -> Cityscapes (target), the papers' main benchmark.
``synthia_cityscapes``: SYNTHIA-RAND-CITYSCAPES (source) -> Cityscapes (target).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segda.config import DataConfig, ModelConfig
from segda.data.stats import class_frequencies

DATASETS = ("embedded", "gta5_cityscapes", "synthia_cityscapes")


@dataclass
class DomainData:
    """The splits a run uses. ``train_source`` is labelled; ``train_target`` is used without
    labels (except by an oracle, whose ``train_source`` *is* the labelled target split)."""

    train_source: Any
    train_target: Any
    val_source: Any | None
    val_target: Any
    name: str = "embedded"
    prior_fn: Any = None
    normalization: str = "embedded"  # how images were normalised (for display)

    def source_prior(self) -> np.ndarray:
        """Pixel share of each class in the source training labels (ADVENT's CP prior)."""
        if self.prior_fn is None:
            raise ValueError(f"dataset {self.name!r} has no source class prior")
        return self.prior_fn()


def resolve_normalization(data: DataConfig, model: ModelConfig) -> str:
    """``auto``: caffe (BGR, mean subtraction) for the official DeepLab inits, ImageNet RGB
    statistics otherwise."""
    if data.normalization != "auto":
        return data.normalization
    return "caffe" if model.name in ("deeplabv2_resnet101", "deeplab_vgg16") else "imagenet"


def build_datasets(data: DataConfig, model: ModelConfig | None = None) -> DomainData:
    model = model or ModelConfig()
    if data.dataset == "embedded":
        return _embedded(data)
    if data.dataset in ("gta5_cityscapes", "synthia_cityscapes"):
        return _real(data, model)
    raise ValueError(f"unknown dataset {data.dataset!r}; choose one of {DATASETS}")


def _embedded(data: DataConfig) -> DomainData:
    from segda.data import embedded_cache, synthetic

    w_src, h_src = data.source_size
    w_tgt, h_tgt = data.target_size
    if (w_src, h_src) != (w_tgt, h_tgt):
        raise ValueError("the embedded benchmark renders both domains at one size")
    scfg = synthetic.SyntheticConfig(
        height=h_src, width=w_src, palette_shift=data.palette_shift,
        light_shift=data.light_shift, seed=data.embedded_seed,
    )

    cache_dir = Path(data.root) / embedded_cache.FOLDER

    def make(domain: str, split: str, flip: bool = False):
        # A verified pre-rendered split (data_scripts/cache_embedded.py) when there is one.
        cached = embedded_cache.load_verified(cache_dir, domain, split, scfg, flip)
        if cached is not None:
            return cached
        return synthetic.SyntheticStreetScenes(domain, split, scfg, flip=flip, cache=True)

    # Only the training splits are mirrored (as the real datasets); evaluation never is.
    src_train = make("source", "train", data.flip)
    tgt_train = make("target", "train", data.flip)
    src_val = make("source", "val")
    tgt_val = make("target", "val")
    if data.train_on == "target":
        src_train = tgt_train
    return DomainData(
        train_source=src_train, train_target=tgt_train, val_source=src_val, val_target=tgt_val,
        name="embedded", prior_fn=lambda: class_frequencies(src_train),
    )


def _real(data: DataConfig, model: ModelConfig) -> DomainData:
    from segda.data.cityscapes import Cityscapes

    root = Path(data.root)
    norm = resolve_normalization(data, model)
    if data.dataset == "gta5_cityscapes":
        from segda.data.gta5 import GTA5 as Source

        src_root = root / "GTA5"
    else:
        from segda.data.synthia import SYNTHIA as Source

        src_root = root / "SYNTHIA"
    cs_root = root / "Cityscapes"
    # A list file ("" = the official list) selects a subset, without the official count check.
    src_train = Source(src_root, size=data.source_size, normalization=norm, flip=data.flip,
                       list_file=data.source_list or None)
    tgt_train = Cityscapes(
        cs_root, split="train", size=data.target_size, normalization=norm,
        with_labels=data.train_on == "target", flip=data.flip, list_file=data.target_list or None,
    )
    tgt_val = Cityscapes(cs_root, split="val", size=data.target_size, normalization=norm,
                         list_file=data.val_list or None)
    if data.train_on == "target":
        src_train = tgt_train
    return DomainData(
        train_source=src_train, train_target=tgt_train, val_source=None, val_target=tgt_val,
        name=data.dataset, prior_fn=lambda: class_frequencies(src_train),
        normalization=norm,
    )
