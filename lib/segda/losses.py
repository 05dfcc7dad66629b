"""Losses of the adaptation methods, each checked in tests against a hand computation.

Conventions from both official repositories: the discriminator labels source as 0 and target
as 1; the segmenter fools it by having target predictions labelled 0 (source).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from segda.labels import IGNORE_INDEX

SOURCE_DOMAIN = 0.0
TARGET_DOMAIN = 1.0
# The official code adds 1e-30 inside the log so that p = 0 gives 0 * log(1e-30) = 0.
LOG_EPS = 1e-30
HALF_DTYPES = (torch.float16, torch.bfloat16)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is in a half precision (bf16 autocast), otherwise unchanged.

    Losses, softmax and logarithms run in at least float32; a float64 model stays float64.
    """
    return x.float() if x.dtype in HALF_DTYPES else x


def seg_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over valid pixels (label 255 ignored), via ``ignore_index``.

    Same value as the official ``cross_entropy_2d`` (which gathers the valid pixels with a
    boolean mask first) but without the masked indexing and its sort-based backward.

    Shape: logits ``(N, C, H, W)``, labels ``(N, H, W)`` int64.
    """
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def seg_cross_entropy_masked(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The official formulation: select valid pixels with a boolean mask, then mean CE.

    Kept as the benchmark's reference mode; numerically the same function as
    :func:`seg_cross_entropy`.
    """
    valid = (labels >= 0) & (labels != IGNORE_INDEX)
    flat = logits.permute(0, 2, 3, 1)[valid]  # (num_valid, C)
    return F.cross_entropy(flat, labels[valid])


def weighted_self_information(prob: torch.Tensor) -> torch.Tensor:
    """ADVENT's ``prob_2_entropy``: ``-p * log2(p) / log2(C)`` per channel (not summed).

    Its channel sum is the per-pixel entropy normalised to [0, 1]. AdvEnt's discriminators see
    this map. Shape: ``(N, C, H, W) -> (N, C, H, W)``.
    """
    c = prob.shape[1]
    return -prob * torch.log2(prob + LOG_EPS) / math.log2(c)


def entropy_loss(prob: torch.Tensor) -> torch.Tensor:
    """ADVENT's MinEnt loss: mean over pixels of the entropy normalised by ``log2(C)``.

    Equals ``-sum(p log2 p) / (N * H * W * log2 C)`` as the official ``entropy_loss``.
    """
    n, c, h, w = prob.shape
    return -(prob * torch.log2(prob + LOG_EPS)).sum() / (n * h * w * math.log2(c))


def class_ratio_prior_loss(
    prob: torch.Tensor, source_prior: torch.Tensor, mu: float = 0.5
) -> torch.Tensor:
    """ADVENT's class-ratio prior (Vu et al., CVPR 2019, section 3.3, "CP").

    ``sum_c max(0, mu * xi_s[c] - xi_x[c])`` where ``xi_s`` is the source class distribution
    counted from the source labels and ``xi_x`` is the mean predicted class distribution of the
    target image ``x`` (softmax averaged over its pixels). It penalises only classes whose
    predicted share falls below a fraction ``mu`` of their source share, which counters
    entropy minimisation's drift toward easy, frequent classes. Averaged over the batch.
    The soft (mean-softmax) target distribution and the one-sided hinge follow a co-author's
    description in valeoai/ADVENT#9; the official code does not implement CP (ADVENT#16).

    Shape: prob ``(N, C, H, W)``, source_prior ``(C,)``.
    """
    xi_x = prob.mean(dim=(2, 3))  # (N, C)
    floor = mu * source_prior.to(prob)
    return torch.clamp(floor.unsqueeze(0) - xi_x, min=0).sum(dim=1).mean()


def gan_loss(d_out: torch.Tensor, domain: float, kind: str = "bce") -> torch.Tensor:
    """Adversarial loss of discriminator logits against a domain label (0 source, 1 target).

    ``kind="bce"``: BCE with logits (both official repos, "vanilla" GAN); ``kind="lsgan"``: the
    least-squares GAN option of AdaptSegNet (MSE of the raw outputs to the label).
    """
    target = torch.full_like(d_out, domain)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(d_out, target)
    if kind == "lsgan":
        return F.mse_loss(d_out, target)
    raise ValueError(f"gan loss must be 'bce' or 'lsgan', got {kind!r}")
