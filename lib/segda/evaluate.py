"""Evaluation: predictions the papers' way, single models and ensembles.

The official protocol takes the *main* head's logits, upsamples them bilinearly with
``align_corners=True`` to the label resolution (2048x1024 for Cityscapes val, input 1024x512),
takes the argmax and accumulates a 19x19 confusion matrix over valid pixels. ADVENT's
AdvEnt+MinEnt result (45.5) is an *ensemble*: the weighted sum (0.5 / 0.5) of the two models'
upsampled main logits, before any softmax. ``combine="probs"`` averages softmax probabilities
instead (an option, not the papers').

Every setting that changes a prediction (device, classes, batch, ``run.align_corners``,
``run.amp``, an ensemble's weights and combination) is one :class:`Predictor`, made from a run's
config by :meth:`Predictor.from_config`; every evaluation of the package predicts through one,
so the fit loop, ``python -m segda eval``, the ledger and the ensemble give a run one number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segda import io
from segda.errors import UserError
from segda.labels import CLASS_NAMES, CLASS_SUBSETS, IGNORE_INDEX
from segda.losses import entropy_loss, upcast
from segda.metrics import ConfusionMatrix, format_iou_table, iou_table, mean_iou
from segda.models.outputs import SegOutput, upsample_logits
from segda.repro import resolve_device

if TYPE_CHECKING:
    from segda.config import TrainConfig


class EvaluationError(ValueError, UserError):
    """An evaluation that would give a meaningless number: no image, no labelled pixel, or
    labels and predictions over different classes."""


@dataclass
class EvalResult:
    confusion: torch.Tensor
    iou: np.ndarray
    miou: float
    num_images: int

    def miou_over(self, classes: Sequence[int]) -> float:
        return mean_iou(self.iou, classes)

    def table(self, name: str = "result"):
        return iou_table({name: self.iou})


@contextlib.contextmanager
def eval_mode(*models: nn.Module | None):
    """Eval mode (running batch-norm statistics) inside the block; each model's mode restored.
    ``None`` entries are skipped (an absent discriminator)."""
    present = [m for m in models if m is not None]
    modes = [m.training for m in present]
    for m in present:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(present, modes, strict=True):
            m.train(mode)


def _item_batches(dataset, indices: Sequence[int], batch_size: int):
    """Lists of at most ``batch_size`` items of ``dataset`` at ``indices``."""
    for start in range(0, len(indices), batch_size):
        yield [dataset[i] for i in indices[start : start + batch_size]]


def check_max_images(max_images: int | None, name: str = "max_images") -> None:
    """``max_images`` means one thing in every function that takes it: ``None`` is every image,
    a count is at least 1. 0 is refused rather than read as "all" (or as no image, an empty
    figure), so a 0 typed for "all" is never silently one or the other; ``name``: the
    parameter as the caller knows it."""
    if max_images is not None and max_images < 1:
        raise EvaluationError(f"{name} must be at least 1 (None: every image), got {max_images}")


def _indices(dataset, max_images: int | None, rank: int = 0, world_size: int = 1) -> range:
    """The first ``max_images`` images; rank ``r`` of ``W`` takes every ``W``-th of them."""
    check_max_images(max_images)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    return range(rank, n, world_size)


COMBINE = ("logits", "probs")
# The run settings a prediction depends on; an ensemble's members must agree on them.
RUN_SETTINGS = ("align_corners", "amp")


def ensemble_weights(weights: Sequence[float] | None, n: int | None = None) -> tuple[float, ...] | None:
    """``weights`` checked as an ensemble's (one positive, finite number per model; ``n``: the
    number of models, when known), or equal weights ``1 / n`` when ``weights`` is None."""
    if weights is None:
        return None if n is None else tuple([1.0 / n] * n)
    weights = tuple(float(w) for w in weights)
    if not weights or not all(math.isfinite(w) and w > 0 for w in weights):
        raise EvaluationError(
            f"ensemble weights must be positive numbers, got {list(weights)}: each is a member's "
            "share of the summed logits (ADVENT: 0.5 0.5); a weight of 0 or less drops or inverts "
            "a member, and weights summing to 0 predict nothing"
        )
    if n is not None and len(weights) != n:
        raise EvaluationError(
            f"{n} model(s) but {len(weights)} weight(s) {list(weights)}: give one weight per "
            "model, in the models' order (or none: equal weights)"
        )
    return weights


@dataclass(frozen=True)
class Predictor:
    """Every setting that changes a prediction, in one value: how models are run on images and
    how their main logits become the prediction.

    Made from a run's config (:meth:`from_config`), it predicts the way the run's own fit loop
    evaluated it: the same upsampling (``run.align_corners``) and autocast (``run.amp``), so
    ``python -m segda eval``, the ledger and the ensemble report the run's number. The defaults
    are the papers' protocol (``align_corners=True``, float32).

    ``weights`` / ``combine``: an ensemble's weight per model (None: equal) and what is summed,
    the main logits (ADVENT's ensemble) or their softmax (``"probs"``, an option).
    """

    device: torch.device | str = "auto"
    num_classes: int = 19
    align_corners: bool = True
    amp: bool = False  # bf16 autocast of the forward pass; logits upsampled in float32
    batch_size: int = 8
    weights: tuple[float, ...] | None = None
    combine: str = "logits"

    def __post_init__(self) -> None:
        # frozen: normalised fields are set through object.__setattr__
        if isinstance(self.device, str):
            object.__setattr__(self, "device", resolve_device(self.device))
        object.__setattr__(self, "weights", ensemble_weights(self.weights))
        if self.combine not in COMBINE:
            raise EvaluationError(f"combine must be one of {COMBINE}, got {self.combine!r}")
        if self.batch_size < 1 or self.num_classes < 1:
            raise EvaluationError(
                f"batch_size and num_classes must be at least 1, got {self.batch_size} and "
                f"{self.num_classes}")

    @classmethod
    def from_config(cls, cfg: TrainConfig, device: str | torch.device | None = None,
                    **changes: Any) -> Predictor:
        """How the run of ``cfg`` predicts (its classes, ``run.align_corners``, ``run.amp``), on
        ``device`` (default: ``run.device``); ``changes``: other fields (``weights``...)."""
        return cls(device=cfg.run.device if device is None else device,
                   num_classes=cfg.model.num_classes, align_corners=cfg.run.align_corners,
                   amp=cfg.run.amp, **changes)

    @classmethod
    def for_runs(cls, cfgs: Sequence[TrainConfig], names: Sequence[str] | None = None,
                 device: str | torch.device | None = None, **changes: Any) -> Predictor:
        """One prediction for an ensemble of runs (``names`` name them in errors): their
        configs must agree on every setting that changes a prediction."""
        names = list(names) if names is not None else [f"member {i}" for i in range(len(cfgs))]
        for key in ("model.num_classes", *(f"run.{s}" for s in RUN_SETTINGS)):
            section, field = key.split(".")
            values = [getattr(getattr(c, section), field) for c in cfgs]
            if len(set(values)) > 1:
                listed = ", ".join(f"{n}: {v}" for n, v in zip(names, values, strict=True))
                raise EvaluationError(
                    f"the ensemble's members predict differently ({key}: {listed}); an "
                    "ensemble sums predictions made one way: choose members trained with the "
                    f"same {key}"
                )
        return cls.from_config(cfgs[0], device, **changes)

    def replace(self, **changes: Any) -> Predictor:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """The settings beyond the model that a number depends on, as one short string."""
        text = f"align_corners={self.align_corners} amp={self.amp}"
        if self.weights is not None:
            text += f" weights={list(self.weights)}"
        return text + (f" combine={self.combine}" if self.combine != "logits" else "")

    def forward(self, model: nn.Module, images: torch.Tensor) -> SegOutput:
        """``model(images)`` under the predictor's autocast. Runs in the model's current mode;
        wrap it in :func:`eval_mode` and ``torch.no_grad()`` to predict."""
        with torch.autocast(images.device.type, torch.bfloat16, enabled=self.amp):
            return model(images)

    def predict(self, model: nn.Module, images: torch.Tensor, size: tuple[int, int],
                ) -> tuple[SegOutput, torch.Tensor]:
        """One model's output on ``images`` and its main logits upsampled to ``size`` (bilinear,
        ``align_corners`` as set), in at least float32."""
        out = self.forward(model, images)
        return out, upsample_logits(upcast(out.main), size, self.align_corners)

    @torch.no_grad()
    def logits(self, models: nn.Module | Sequence[nn.Module], images: torch.Tensor,
               size: tuple[int, int]) -> torch.Tensor:
        """Main-head outputs upsampled to ``size`` and combined over models.

        ``combine="logits"``: ``sum_k w_k * logits_k`` (ADVENT's ensemble); ``"probs"``:
        ``sum_k w_k * softmax(logits_k)``. A single model gives its upsampled logits.
        """
        models = [models] if isinstance(models, nn.Module) else list(models)
        weights = self.weights if self.weights is not None else [1.0 / len(models)] * len(models)
        ensemble_weights(weights, len(models))
        total = None
        for model, w in zip(models, weights, strict=True):
            _, up = self.predict(model, images, size)
            term = w * (F.softmax(up, dim=1) if self.combine == "probs" else up)
            total = term if total is None else total + term
        return total

    def batches(self, dataset, max_images: int | None = None, rank: int = 0,
                world_size: int = 1):
        """``(items, images on the device)`` per batch of the first ``max_images`` images
        (rank ``r`` of ``W``: every ``W``-th of them)."""
        for items in _item_batches(dataset, _indices(dataset, max_images, rank, world_size),
                                   self.batch_size):
            yield items, torch.stack([it["image"] for it in items]).to(self.device)


def _spec(predictor: Predictor | None, settings: dict[str, Any]) -> Predictor:
    """``predictor`` (default: the papers' protocol) with ``settings`` (fields) changed."""
    if predictor is None:
        return Predictor(**settings)
    return predictor.replace(**settings) if settings else predictor


@torch.no_grad()
def evaluate(
    models: nn.Module | Sequence[nn.Module],
    dataset,
    predictor: Predictor | None = None,
    *,
    max_images: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    **settings: Any,
) -> EvalResult:
    """Confusion matrix, per-class IoU and mIoU of one model or an ensemble on ``dataset``,
    predicted by ``predictor`` (default: the papers' protocol; a run's own settings:
    ``Predictor.from_config(cfg)``). ``settings``: fields of the predictor changed for this
    call (``device="cpu"``).

    Items of ``dataset`` are dicts with ``"image"`` (3, H, W) and ``"label"`` (h, w); logits
    are upsampled to the label's size, so full-resolution labels give the papers' protocol.
    Models are put in eval mode (running batch-norm statistics) and restored afterwards.
    ``rank`` / ``world_size``: in a data-parallel run each rank evaluates every
    ``world_size``-th image and the confusion matrices are summed over the ranks.
    """
    spec = _spec(predictor, settings)
    device, num_classes = spec.device, spec.num_classes
    model_list = [models] if isinstance(models, nn.Module) else list(models)
    check_max_images(max_images)
    if len(dataset) == 0:
        raise EvaluationError("the evaluation split holds no image")
    ensemble_weights(spec.weights, len(model_list))  # before any image is predicted
    conf = ConfusionMatrix(num_classes)
    outside = torch.zeros((), dtype=torch.long, device=device)  # labels no class of the model
    top_label = torch.zeros((), dtype=torch.long, device=device)
    n = 0
    with eval_mode(*model_list):
        for items, images in spec.batches(dataset, max_images, rank, world_size):
            # Items of one batch share a label size (datasets resize to a fixed size).
            labels = torch.stack([torch.as_tensor(it["label"]) for it in items]).to(device)
            logits = spec.logits(model_list, images, tuple(labels.shape[-2:]))
            if logits.shape[1] != num_classes:
                raise EvaluationError(
                    f"the model predicts {logits.shape[1]} classes but num_classes is "
                    f"{num_classes}; evaluate it with num_classes={logits.shape[1]} on labels "
                    f"of {logits.shape[1]} classes"
                )
            # Counted on the device, checked once at the end (no synchronisation per batch).
            valid = labels != IGNORE_INDEX
            bad = valid & ((labels < 0) | (labels >= num_classes))
            outside += bad.sum()
            top_label = torch.maximum(top_label, torch.where(valid, labels, 0).max().long())
            conf.update(logits.argmax(1), labels)
            n += len(items)
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(outside)  # every rank raises, or none
        torch.distributed.all_reduce(top_label, op=torch.distributed.ReduceOp.MAX)
    if int(outside) > 0:
        raise EvaluationError(
            f"{int(outside)} labelled pixels hold class ids outside 0..{num_classes - 1} (up to "
            f"{int(top_label)}): the labels have more classes than the model's {num_classes}. "
            "Evaluate a model trained on these labels' classes (model.num_classes = "
            f"{int(top_label) + 1} or more), or labels of {num_classes} classes"
        )
    if world_size > 1:
        conf.reduce_from_all_processes(device)
    if int(conf.matrix.sum()) == 0:
        raise EvaluationError(
            f"no labelled pixel in the {n} evaluated image(s) (every label is {IGNORE_INDEX}): "
            "the mIoU would be NaN; check the labels of the evaluation split"
        )
    iou = conf.iou()
    return EvalResult(conf.matrix.cpu(), iou, mean_iou(iou), n)


@torch.no_grad()
def predicted_class_shares(
    model: nn.Module, dataset, predictor: Predictor | None = None, *,
    max_images: int | None = None, **settings: Any,
) -> np.ndarray:
    """Share of pixels predicted as each class (argmax of the main head), ``(num_classes,)``.

    Shows entropy minimisation's drift toward frequent classes, and what the class-ratio
    prior changes. ``predictor`` / ``settings``: as for :func:`evaluate`.
    """
    spec = _spec(predictor, settings)
    counts = torch.zeros(spec.num_classes, dtype=torch.long)
    with eval_mode(model):
        for _, images in spec.batches(dataset, max_images):
            pred = spec.logits(model, images, tuple(images.shape[-2:])).argmax(1)
            counts += torch.bincount(pred.reshape(-1).cpu(),
                                     minlength=spec.num_classes)[:spec.num_classes]
    return (counts / counts.sum().clamp(min=1)).numpy()


@torch.no_grad()
def mean_entropy(
    model: nn.Module, dataset, predictor: Predictor | None = None, *,
    max_images: int | None = None, **settings: Any,
) -> float:
    """Mean normalised per-pixel entropy (in [0, 1]) of the main head's predictions.

    ADVENT's starting observation: low on source images (except at object boundaries), high
    on target images. ``predictor`` / ``settings``: as for :func:`evaluate`.
    """
    spec = _spec(predictor, settings)
    total, count = 0.0, 0
    with eval_mode(model):
        for _, images in spec.batches(dataset, max_images):
            logits = spec.logits(model, images, tuple(images.shape[-2:]))
            total += float(entropy_loss(F.softmax(logits, dim=1))) * len(images)
            count += len(images)
    return total / max(count, 1)


@torch.no_grad()
def discriminator_scores(
    model: nn.Module, discriminator: nn.Module, method, dataset,
    predictor: Predictor | None = None, *, level: str = "main", max_images: int | None = None,
    **settings: Any,
) -> np.ndarray:
    """The discriminator's verdict on every output cell of every image, as it sees the images
    in training: ``sigmoid`` of its logits, near 1 = "looks like target" (source is labelled 0).

    ``method`` (a :class:`segda.methods.Method` or its name) says what the discriminator sees:
    the output upsampled to the image size the predictor's way, both networks under its
    autocast, as in a training step. Both modules run in eval mode and are restored.
    ``predictor`` / ``settings``: as for :func:`evaluate`. Returns a flat float array;
    comparing the scores of source and target images shows how well the discriminator tells
    them apart.
    """
    from segda import methods

    method = methods.get(method) if isinstance(method, str) else method
    spec = _spec(predictor, settings)
    scores = []
    with eval_mode(model, discriminator):
        for _, images in spec.batches(dataset, max_images):
            out = spec.forward(model, images).upsampled(tuple(images.shape[-2:]),
                                                         spec.align_corners)
            with torch.autocast(images.device.type, torch.bfloat16, enabled=spec.amp):
                logits = discriminator(methods.disc_input(method, out, level))
            scores.append(torch.sigmoid(upcast(logits)).flatten().cpu())
    return torch.cat(scores).numpy() if scores else np.zeros(0)


# ------------------------------------------------------------------ an evaluation's tables


def require_cityscapes_classes(num_classes: int, path) -> None:
    """The tables report the Cityscapes classes: a model of other classes (``path``: where it
    was read) is refused with the way to evaluate it."""
    if num_classes != len(CLASS_NAMES):
        raise EvaluationError(
            f"{path} holds a model of {num_classes} classes; eval reports the "
            f"{len(CLASS_NAMES)} Cityscapes classes (and their 16/13-class subsets), so it "
            f"needs a {len(CLASS_NAMES)}-class model. Evaluate this one from Python with "
            "segda.evaluate.evaluate on labels of its classes")


def tables_folder(folder) -> Path:
    """``folder``, made and checked writable before anything is evaluated."""
    folder = Path(folder)
    fix = "pass --out DIR, a folder you can write (made when missing)"
    if folder.exists() and not folder.is_dir():
        raise EvaluationError(f"the output folder {folder} is a file, not a folder; {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise EvaluationError(
            f"cannot write into the output folder {folder} ({err.strerror or err}); {fix}"
        ) from None
    return folder


def _digest(*texts: str) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:8]


def tables_stem(paths: Sequence, weights: Sequence[float], dataset: str, *, beside: bool,
                combine: str = "logits", root: str | None = None, max_images: int | None = None,
                num_classes: int = 19) -> str:
    """The name of an evaluation's tables: everything that changes them, so that two
    evaluations never share a file. One checkpoint written ``beside`` itself is named by its
    file; otherwise each member by its folder and file, with a digest of their full paths
    (ensembles of same-named folders of two seeds stay apart)."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and beside:
        parts = [paths[0].stem]
    else:
        parts = ["+".join(f"{p.parent.name}-{p.stem}" for p in paths),
                 _digest(*(str(p.resolve()) for p in paths))]
    if len(set(weights)) > 1:
        parts.append("w" + "-".join(f"{w:g}" for w in weights))
    if combine != "logits":
        parts.append(combine)
    parts.append(dataset)
    if root:
        parts.append(f"root-{_digest(str(Path(root).resolve()))}")
    if max_images is not None:
        parts.append(f"{max_images}img")
    return "eval_" + "_".join(parts) + f"_{num_classes}cls"


def write_tables(folder, stem: str, name: str, iou: np.ndarray, num_classes: int = 19) -> str:
    """``name``'s per-class IoU over ``num_classes`` classes (19, or a 16/13-class subset) as
    ``<stem>.csv`` and ``<stem>.md`` in ``folder``; returns the Markdown table."""
    classes = None if num_classes == 19 else CLASS_SUBSETS[num_classes]
    df = iou_table({name: iou}, classes=classes)
    io.write_text_atomic(Path(folder) / f"{stem}.csv", df.to_csv())
    text = format_iou_table(df)
    io.write_text_atomic(Path(folder) / f"{stem}.md", text + "\n")
    return text
