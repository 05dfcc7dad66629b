"""AdaBN: adapt a trained segmenter to the target by recomputing its batch-norm statistics.

Li et al., "Revisiting Batch Normalization For Practical Domain Adaptation" (2016,
arXiv:1603.04779): the weights learnt on the source are kept as they are;
only each batch-norm layer's running mean and variance are replaced by statistics of the
target images. Domains that differ in low-level statistics (colour means, contrast) differ in
the statistics batch norm normalises with, so this alone removes part of the gap, with no
gradient step and no target label.

The official AdaptSegNet / ADVENT loops do a noisy form of this on the way: their batch norm
runs in training mode, so target forwards update the running statistics (the
``source_only_tgt_bn`` row). :func:`adapt_batch_norm` does it in isolation, on a copy.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

_BatchNorm = nn.modules.batchnorm._BatchNorm


# Target training images whose statistics the statistics rows take (the first ones of the split;
# segda.decomposition, segda.notebook.compare).
STATISTICS_IMAGES = 200


def batch_norm_layers(model: nn.Module) -> dict[str, _BatchNorm]:
    """Every batch-norm layer of ``model`` by its module name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}


@torch.no_grad()
def adapt_batch_norm(seg: nn.Module, dataset, *, max_images: int | None = 200,
                     batch_size: int = 8) -> nn.Module:
    """A deep copy of ``seg`` whose batch-norm running statistics are those of ``dataset``.

    Each batch-norm layer's running mean and variance are reset, then accumulated as the plain
    average over forward passes of the first ``max_images`` images (``None``: all) in batches
    of ``batch_size``: batch norm in training mode with ``momentum=None`` (a cumulative average,
    not an exponential one), every other layer in eval mode, no gradients. With equal batches
    the running mean is the mean of each channel's activations over all images and pixels; the
    running variance is the mean of the batches' (unbiased) variances. Weights are untouched
    and ``seg`` itself is not changed.

    Args:
        seg: a trained segmenter (any ``nn.Module`` taking ``(N, 3, H, W)`` images).
        dataset: items ``{"image": (3, H, W), ...}``; labels, if any, are not read.
        max_images: how many images (from the first) give the statistics.
        batch_size: images per forward pass.

    Returns the copy, in eval mode (it predicts with the new running statistics).
    """
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    if n < 1 or batch_size < 1:
        raise ValueError(f"adapt_batch_norm needs at least one image and a batch size of at "
                         f"least 1 (got {n} images, batch size {batch_size})")
    adapted = copy.deepcopy(seg)
    adapted.eval()
    layers = batch_norm_layers(adapted)
    if not layers:
        raise ValueError("the model has no batch-norm layer: there are no statistics to adapt")
    momenta = {name: bn.momentum for name, bn in layers.items()}
    for bn in layers.values():
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the passes below
        bn.train()  # this layer alone: normalise with, and accumulate, batch statistics
    device = next(adapted.parameters()).device
    for start in range(0, n, batch_size):
        images = torch.stack([dataset[i]["image"] for i in range(start, min(start + batch_size, n))])
        adapted(images.to(device))
    for name, bn in layers.items():
        bn.momentum = momenta[name]
    return adapted.eval()


def same_parameters(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold the same parameters, bit for bit (``torch.equal`` on each)."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def compare_batch_norm(a: nn.Module, b: nn.Module):
    """Per batch-norm layer, how far ``b``'s running statistics are from ``a``'s.

    Columns: ``channels``; ``max |running_mean diff|``; the same in units of ``a``'s standard
    deviation (``max |mean diff| / std``: how many of its own standard deviations a channel's
    mean moved); ``max |running_var ratio - 1|``; ``weights identical`` (the layer's affine
    weight and bias, bit for bit). The index is the layer's module name.
    """
    import pandas as pd

    la, lb = batch_norm_layers(a), batch_norm_layers(b)
    if la.keys() != lb.keys():
        raise ValueError("the two models have different batch-norm layers")
    table = {}
    for name, x in la.items():
        y = lb[name]
        mean_a, var_a = x.running_mean.double(), x.running_var.double()
        mean_b, var_b = y.running_mean.double(), y.running_var.double()
        diff = (mean_b - mean_a).abs()
        affine = [(p, q) for p, q in ((x.weight, y.weight), (x.bias, y.bias)) if p is not None]
        table[name] = {
            "channels": int(mean_a.numel()),
            "max |running_mean diff|": float(diff.max()),
            "max |mean diff| / std": float((diff / var_a.add(x.eps).sqrt()).max()),
            "max |running_var ratio - 1|": float((var_b / var_a.clamp(min=np.finfo(float).tiny)
                                                  - 1).abs().max()),
            "weights identical": all(torch.equal(p, q) for p, q in affine),
        }
    df = pd.DataFrame.from_dict(table, orient="index")
    df.index.name = "layer"
    return df


__all__ = ["adapt_batch_norm", "batch_norm_layers", "compare_batch_norm", "same_parameters"]
