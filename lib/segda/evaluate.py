"""Evaluation: predictions the papers' way, single models and ensembles.

The official protocol takes the *main* head's logits, upsamples them bilinearly with
``align_corners=True`` to the label resolution (2048x1024 for Cityscapes val, input 1024x512),
takes the argmax and accumulates a 19x19 confusion matrix over valid pixels. ADVENT's
AdvEnt+MinEnt result (45.5) is an *ensemble*: the weighted sum (0.5 / 0.5) of the two models'
upsampled main logits, before any softmax. ``combine="probs"`` averages softmax probabilities
instead (an option, not the papers').
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segda.labels import IGNORE_INDEX
from segda.losses import entropy_loss, upcast
from segda.metrics import ConfusionMatrix, iou_table, mean_iou
from segda.models.outputs import SegOutput, upsample_logits
from segda.repro import resolve_device


class EvaluationError(ValueError):
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


def _indices(dataset, max_images: int | None, rank: int = 0, world_size: int = 1) -> range:
    """The first ``max_images`` images; rank ``r`` of ``W`` takes every ``W``-th of them."""
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    return range(rank, n, world_size)


def predict(
    model: nn.Module, images: torch.Tensor, size: tuple[int, int], *,
    align_corners: bool = True, amp: bool = False,
) -> tuple[SegOutput, torch.Tensor]:
    """One model's output on ``images`` and its main logits upsampled to ``size`` the papers'
    way (bilinear, ``align_corners=True``), in at least float32. Runs in the model's current
    mode; wrap it in :func:`eval_mode` and ``torch.no_grad()`` to predict."""
    with torch.autocast(images.device.type, torch.bfloat16, enabled=amp):
        out = model(images)
    return out, upsample_logits(upcast(out.main), size, align_corners)


@torch.no_grad()
def predict_logits(
    models: nn.Module | Sequence[nn.Module],
    images: torch.Tensor,
    size: tuple[int, int],
    weights: Sequence[float] | None = None,
    combine: str = "logits",
    align_corners: bool = True,
    amp: bool = False,
) -> torch.Tensor:
    """Main-head outputs upsampled to ``size`` and combined over models.

    ``combine="logits"``: ``sum_k w_k * logits_k`` (ADVENT's ensemble); ``"probs"``:
    ``sum_k w_k * softmax(logits_k)``. A single model gives its upsampled logits.
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    weights = list(weights) if weights is not None else [1.0 / len(models)] * len(models)
    if len(weights) != len(models):
        raise ValueError(f"{len(models)} models but {len(weights)} weights")
    if combine not in ("logits", "probs"):
        raise ValueError(f"combine must be 'logits' or 'probs', got {combine!r}")
    total = None
    for model, w in zip(models, weights, strict=True):
        _, up = predict(model, images, size, align_corners=align_corners, amp=amp)
        term = w * (F.softmax(up, dim=1) if combine == "probs" else up)
        total = term if total is None else total + term
    return total


@torch.no_grad()
def evaluate(
    models: nn.Module | Sequence[nn.Module],
    dataset,
    *,
    weights: Sequence[float] | None = None,
    combine: str = "logits",
    device: str | torch.device = "auto",
    num_classes: int = 19,
    batch_size: int = 8,
    max_images: int | None = None,
    amp: bool = False,
    align_corners: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> EvalResult:
    """Confusion matrix, per-class IoU and mIoU of one model or an ensemble on ``dataset``.

    Items of ``dataset`` are dicts with ``"image"`` (3, H, W) and ``"label"`` (h, w); logits
    are upsampled to the label's size, so full-resolution labels give the papers' protocol.
    Models are put in eval mode (running batch-norm statistics) and restored afterwards.
    ``rank`` / ``world_size``: in a data-parallel run each rank evaluates every
    ``world_size``-th image and the confusion matrices are summed over the ranks.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    model_list = [models] if isinstance(models, nn.Module) else list(models)
    if max_images is not None and max_images < 1:
        raise EvaluationError(f"max_images must be at least 1 (None: every image), got {max_images}")
    if len(dataset) == 0:
        raise EvaluationError("the evaluation split holds no image")
    conf = ConfusionMatrix(num_classes)
    outside = torch.zeros((), dtype=torch.long, device=device)  # labels no class of the model
    top_label = torch.zeros((), dtype=torch.long, device=device)
    n = 0
    with eval_mode(*model_list):
        for items in _item_batches(dataset, _indices(dataset, max_images, rank, world_size),
                                   batch_size):
            # Items of one batch share a label size (datasets resize to a fixed size).
            images = torch.stack([it["image"] for it in items]).to(device)
            labels = torch.stack([torch.as_tensor(it["label"]) for it in items]).to(device)
            logits = predict_logits(
                model_list, images, tuple(labels.shape[-2:]), weights, combine, align_corners, amp
            )
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
    model: nn.Module, dataset, *, device: str | torch.device = "auto", num_classes: int = 19,
    max_images: int | None = None, batch_size: int = 8,
) -> np.ndarray:
    """Share of pixels predicted as each class (argmax of the main head), ``(num_classes,)``.

    Shows entropy minimisation's drift toward frequent classes, and what the class-ratio
    prior changes.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    counts = torch.zeros(num_classes, dtype=torch.long)
    with eval_mode(model):
        for items in _item_batches(dataset, _indices(dataset, max_images), batch_size):
            images = torch.stack([it["image"] for it in items]).to(device)
            pred = predict_logits(model, images, tuple(images.shape[-2:])).argmax(1)
            counts += torch.bincount(pred.reshape(-1).cpu(), minlength=num_classes)[:num_classes]
    return (counts / counts.sum().clamp(min=1)).numpy()


@torch.no_grad()
def mean_entropy(
    model: nn.Module, dataset, *, device: str | torch.device = "auto",
    max_images: int | None = None, batch_size: int = 8,
) -> float:
    """Mean normalised per-pixel entropy (in [0, 1]) of the main head's predictions.

    ADVENT's starting observation: low on source images (except at object boundaries), high
    on target images.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    total, count = 0.0, 0
    with eval_mode(model):
        for items in _item_batches(dataset, _indices(dataset, max_images), batch_size):
            images = torch.stack([it["image"] for it in items]).to(device)
            logits = predict_logits(model, images, tuple(images.shape[-2:]))
            total += float(entropy_loss(F.softmax(logits, dim=1))) * len(images)
            count += len(images)
    return total / max(count, 1)


@torch.no_grad()
def discriminator_scores(
    model: nn.Module, discriminator: nn.Module, method, dataset, *, level: str = "main",
    device: str | torch.device = "auto", max_images: int | None = None, batch_size: int = 8,
) -> np.ndarray:
    """The discriminator's verdict on every output cell of every image, as it sees the images
    in training: ``sigmoid`` of its logits, near 1 = "looks like target" (source is labelled 0).

    ``method`` (a :class:`segda.methods.Method` or its name) says what the discriminator sees.
    Both modules run in eval mode and are restored. Returns a flat float array; comparing the
    scores of source and target images shows how well the discriminator tells them apart.
    """
    from segda import methods

    method = methods.get(method) if isinstance(method, str) else method
    device = resolve_device(device) if isinstance(device, str) else device
    scores = []
    with eval_mode(model, discriminator):
        for items in _item_batches(dataset, _indices(dataset, max_images), batch_size):
            images = torch.stack([it["image"] for it in items]).to(device)
            out = model(images).upsampled(tuple(images.shape[-2:]))
            logits = discriminator(methods.disc_input(method, out, level))
            scores.append(torch.sigmoid(upcast(logits)).flatten().cpu())
    return torch.cat(scores).numpy() if scores else np.zeros(0)
