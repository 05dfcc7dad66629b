"""The adaptation methods as rows of one table.

Every method shares one training step (:func:`segda.train.train_step`); they differ only in
the unsupervised target term the segmenter gets and in what the discriminator sees:

======================  ==============  ==========================  ===========================
method                  target term     discriminator input         paper
======================  ==============  ==========================  ===========================
``source_only``         none            -                           baseline
``source_only_tgt_bn``  forward only    -                           control: batch-norm stats
``feature_adv``         adversarial     backbone features           FCNs-in-the-wild style
``output_adv``          adversarial     softmax                     AdaptSegNet (Tsai 2018)
``minent``              entropy         -                           ADVENT MinEnt (Vu 2019)
``advent``              adversarial     weighted self-information   ADVENT AdvEnt (Vu 2019)
======================  ==============  ==========================  ===========================

``source_only_tgt_bn`` forwards target images in training mode without any loss: batch norm
then normalises with, and accumulates running statistics from, both domains, as every official
adaptation run does. Part of any method's gain comes from that alone, so gains are reported
against it as well as against plain source-only.

Single- vs multi-level is a config value (``method.levels``), not a method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segda import losses
from segda.config import MethodConfig
from segda.models.outputs import SegOutput


@dataclass(frozen=True)
class Method:
    name: str
    target_term: str  # "none" | "forward_only" | "entropy" | "adversarial"
    disc_input: str | None = None  # None | "features" | "softmax" | "self_information"
    paper: str = ""

    @property
    def uses_target(self) -> bool:
        return self.target_term != "none"

    @property
    def has_discriminator(self) -> bool:
        return self.disc_input is not None


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("source_only", "none", paper="DeepLab-v2 trained on source only"),
        Method("source_only_tgt_bn", "forward_only", paper="control: target batch-norm statistics"),
        Method("feature_adv", "adversarial", "features", "Hoffman et al. 2016 (FCNs in the wild)"),
        Method("output_adv", "adversarial", "softmax", "Tsai et al., CVPR 2018 (AdaptSegNet)"),
        Method("minent", "entropy", paper="Vu et al., CVPR 2019 (ADVENT, MinEnt)"),
        Method("advent", "adversarial", "self_information", "Vu et al., CVPR 2019 (ADVENT, AdvEnt)"),
    ]
}


def level_names(levels: str) -> tuple[str, ...]:
    """``"single"`` -> ``("main",)``; ``"multi"`` -> ``("aux", "main")``."""
    return ("main",) if levels == "single" else ("aux", "main")


def upsample(logits: torch.Tensor, size: tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """Bilinear upsampling of logits to the input size, as both official loops do before any
    loss and before the discriminator (``align_corners=True`` there)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


def discriminator_input(
    method: Method, out: SegOutput, up_logits: dict[str, torch.Tensor], level: str
) -> torch.Tensor:
    """What the level's discriminator sees for one domain's forward pass."""
    if method.disc_input == "features":
        return out.feature_map(level)
    prob = F.softmax(up_logits[level].float(), dim=1)
    if method.disc_input == "softmax":
        return prob
    if method.disc_input == "self_information":
        return losses.weighted_self_information(prob)
    raise ValueError(f"method {method.name!r} has no discriminator")


def _lambda(cfg: MethodConfig, kind: str, level: str) -> float:
    return getattr(cfg, f"lambda_{kind}_{level}")


def target_losses(
    method: Method,
    cfg: MethodConfig,
    out_tgt: SegOutput,
    up_tgt: dict[str, torch.Tensor],
    discs: dict[str, torch.nn.Module],
    source_prior: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The segmenter's unsupervised target terms, *already weighted by their lambdas*.

    Adversarial terms label target predictions as source (0): the segmenter is trained to fool
    the (frozen) discriminators.
    """
    terms: dict[str, torch.Tensor] = {}
    levels = level_names(cfg.levels)
    if method.target_term == "entropy":
        for lvl in levels:
            prob = F.softmax(up_tgt[lvl].float(), dim=1)
            terms[f"ent_{lvl}"] = _lambda(cfg, "ent", lvl) * losses.entropy_loss(prob)
    elif method.target_term == "adversarial":
        for lvl in levels:
            d_out = discs[lvl](discriminator_input(method, out_tgt, up_tgt, lvl))
            terms[f"adv_{lvl}"] = _lambda(cfg, "adv", lvl) * losses.gan_loss(
                d_out.float(), losses.SOURCE_DOMAIN, cfg.gan_loss
            )
    if cfg.lambda_cp > 0 and method.target_term in ("entropy", "adversarial"):
        if source_prior is None:
            raise ValueError("method.lambda_cp > 0 needs the source class prior")
        prob = F.softmax(up_tgt["main"].float(), dim=1)
        terms["cp_main"] = cfg.lambda_cp * losses.class_ratio_prior_loss(
            prob, source_prior, cfg.cp_mu
        )
    return terms


def discriminator_losses(
    method: Method,
    cfg: MethodConfig,
    discs: dict[str, torch.nn.Module],
    d_inputs: dict[str, torch.Tensor],
    domain: str,
) -> dict[str, torch.Tensor]:
    """Each discriminator's loss on one domain's *detached* inputs (source labelled 0, target
    1), halved as in both official loops. The official loop calls this for the source, runs
    backward, then for the target, so the two graphs are never alive together."""
    label = losses.SOURCE_DOMAIN if domain == "src" else losses.TARGET_DOMAIN
    return {
        f"disc_{lvl}_{domain}": 0.5
        * losses.gan_loss(discs[lvl](d_inputs[lvl].detach()).float(), label, cfg.gan_loss)
        for lvl in level_names(cfg.levels)
    }
