"""Dataset names accepted by configs and notebooks, and what each one builds.

``embedded`` (default): the procedurally generated two-domain benchmark, no files needed.
``gta5_cityscapes``: GTA5 (source) -> Cityscapes (target), the papers' main benchmark.
``synthia_cityscapes``: SYNTHIA-RAND-CITYSCAPES (source) -> Cityscapes (target).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segda.config import DataConfig, ModelConfig, check_embedded_sizes
from segda.data.stats import class_frequencies

DATASETS = ("embedded", "gta5_cityscapes", "synthia_cityscapes")


SPLITS = ("train_source", "train_target", "val_source", "val_target")


class DomainData:
    """The splits a run uses, each built on first access.

    ``train_source`` is labelled; ``train_target`` is used without labels (except by an
    oracle, whose ``train_source`` *is* the labelled target split); ``val_source`` may be None.
    A split is built only when it is first read, so evaluating on ``val_target`` needs only
    that split's files, and a missing dataset is reported (with the command that fixes it)
    by the first split that needs it.

    Args:
        build: for each name in :data:`SPLITS`, a function of no arguments returning the split.
        name: the dataset name (``DataConfig.dataset``).
        normalization: how images were normalised (for :func:`segda.viz.to_display`).
    """

    def __init__(self, build: dict[str, Callable[[], Any]], name: str = "embedded",
                 normalization: str = "embedded") -> None:
        missing = [s for s in SPLITS if s not in build]
        if missing:
            raise ValueError(f"DomainData needs a builder for every split; missing {missing}")
        self._build = dict(build)
        self._built: dict[str, Any] = {}
        self.name = name
        self.normalization = normalization

    def _split(self, split: str) -> Any:
        if split not in self._built:
            self._built[split] = self._build[split]()
        return self._built[split]

    train_source = property(lambda self: self._split("train_source"))
    train_target = property(lambda self: self._split("train_target"))
    val_source = property(lambda self: self._split("val_source"))
    val_target = property(lambda self: self._split("val_target"))

    def replace(self, **splits: Any) -> DomainData:
        """A copy with some splits given (e.g. a wrapped ``train_source``), the others built
        from this one's on first access."""
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; the splits are {list(SPLITS)}")
        build = {s: (lambda v=v: v) for s, v in splits.items()}
        return DomainData({**{s: functools.partial(self._split, s) for s in SPLITS}, **build},
                          self.name, self.normalization)

    def source_prior(self) -> np.ndarray:
        """Pixel share of each class in the source training labels (ADVENT's CP prior)."""
        return class_frequencies(self.train_source)

    def __repr__(self) -> str:
        return f"DomainData(name={self.name!r}, built={sorted(self._built)})"


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


def embedded_config(data: DataConfig):
    """The generator config (:class:`segda.data.synthetic.SyntheticConfig`) that renders the
    embedded benchmark a data config asks for."""
    from segda.data import synthetic

    check_embedded_sizes(data)  # a DataConfig built directly is not validated
    w_src, h_src = data.source_size
    return synthetic.SyntheticConfig(
        height=h_src, width=w_src, palette_shift=data.palette_shift,
        light_shift=data.light_shift, balance_shift=data.balance_shift, seed=data.embedded_seed,
        condition_shift=data.condition_shift, class_confusion=data.class_confusion,
    )


def _embedded(data: DataConfig) -> DomainData:
    from segda.data import embedded_cache, synthetic

    scfg = embedded_config(data)
    cache_dir = Path(data.root) / embedded_cache.FOLDER

    def make(domain: str, split: str, flip: bool = False):
        # A verified pre-rendered split (data_scripts/cache_embedded.py) when there is one.
        cached = embedded_cache.load_verified(cache_dir, domain, split, scfg, flip)
        if cached is not None:
            return cached
        return synthetic.SyntheticStreetScenes(domain, split, scfg, flip=flip, cache=True)

    # Only the training splits are mirrored (as the real datasets); evaluation never is.
    out = DomainData({
        "train_source": lambda: (out.train_target if data.train_on == "target"
                                 else make("source", "train", data.flip)),
        "train_target": lambda: make("target", "train", data.flip),
        "val_source": lambda: make("source", "val"),
        "val_target": lambda: make("target", "val"),
    }, name="embedded")
    return out


def require_roots(data: DataConfig) -> None:
    """The dataset folders training reads exist (the splits themselves are read when first
    used, after the run folder is made): raises the error a split would raise, naming the
    folder and the command that prepares it. Nothing to check for the embedded benchmark."""
    if data.dataset == "embedded":
        return
    from segda.data import cityscapes, gta5, synthia
    from segda.data.real import require_root

    root = Path(data.root)
    if data.train_on == "source":  # an oracle reads no source image
        source = gta5 if data.dataset == "gta5_cityscapes" else synthia
        require_root(root / ("GTA5" if source is gta5 else "SYNTHIA"), source.NAME,
                     source.PREPARE_COMMAND)
    require_root(root / "Cityscapes", cityscapes.NAME, cityscapes.PREPARE_COMMAND)


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
    def source():
        return Source(src_root, size=data.source_size, normalization=norm, flip=data.flip,
                      list_file=data.source_list or None)

    def target_train():
        return Cityscapes(cs_root, split="train", size=data.target_size, normalization=norm,
                          with_labels=data.train_on == "target", flip=data.flip,
                          list_file=data.target_list or None)

    def target_val():
        return Cityscapes(cs_root, split="val", size=data.target_size, normalization=norm,
                          list_file=data.val_list or None)

    out = DomainData({
        "train_source": lambda: out.train_target if data.train_on == "target" else source(),
        "train_target": target_train,
        "val_source": lambda: None,
        "val_target": target_val,
    }, name=data.dataset, normalization=norm)
    return out
