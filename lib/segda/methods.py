"""The adaptation methods as rows of one table, each with its target term written out.

Methods differ only in the unsupervised target term the segmenter gets and in what the
discriminator sees:

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

Each method's target term is one named function below (:func:`feature_adv_terms`,
:func:`adaptsegnet_terms`, :func:`minent_terms`, :func:`advent_terms`). Single- vs multi-level
is a config value (``method.levels``), not a method. A new method is a new :class:`Method` row
given to :func:`register`: its target loss, what its discriminator sees (a :class:`DiscInput`)
and, optionally, a transform of the source batch that may use the target batch (FDA-style);
``docs/architecture.md`` shows one of each. The training step every row shares, in the
official order of passes, is :func:`segda.step.train_step`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from segda import losses
from segda.config import ConfigError
from segda.models.outputs import SegOutput

if TYPE_CHECKING:
    from segda.config import MethodConfig


@dataclass(frozen=True)
class DiscInput:
    """What a discriminator sees of one forward pass, in two steps.

    ``tap(out, level)`` picks the tensor kept from the pass (``out`` has its logits already
    upsampled to the input size); the discriminator's own step gets it detached. ``view``
    turns it into the discriminator's input. ``kind`` names the discriminator architecture
    (:data:`segda.models.DISCRIMINATORS`) and ``channels(seg, num_classes, level)`` its input
    channels.
    """

    name: str
    kind: str
    tap: Callable[[SegOutput, str], torch.Tensor]
    view: Callable[[torch.Tensor], torch.Tensor]
    channels: Callable[[nn.Module, int, str], int]

    def __str__(self) -> str:
        return self.name


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities over the channels, in at least float32 (``F.softmax`` of the
    official loops, whose implicit dim is 1 on a 4-D input)."""
    return F.softmax(losses.upcast(logits), dim=1)


def self_information(logits: torch.Tensor) -> torch.Tensor:
    """ADVENT's ``prob_2_entropy(F.softmax(x))``: the weighted self-information of the
    softmax, what AdvEnt's discriminators see."""
    return losses.weighted_self_information(softmax(logits))


def _logits(out: SegOutput, level: str) -> torch.Tensor:
    return out.logits(level)


def _class_channels(seg: nn.Module, num_classes: int, level: str) -> int:
    return num_classes


def _feature_channels(seg: nn.Module, num_classes: int, level: str) -> int:
    return seg.feature_channels if level == "main" else seg.aux_feature_channels


FEATURES = DiscInput("features", "feature", SegOutput.feature_map, lambda x: x, _feature_channels)
SOFTMAX = DiscInput("softmax", "output", _logits, softmax, _class_channels)
SELF_INFORMATION = DiscInput("self_information", "output", _logits, self_information,
                             _class_channels)


def level_names(levels: str) -> tuple[str, ...]:
    """``"single"`` -> ``("main",)``; ``"multi"`` -> ``("aux", "main")``."""
    return ("main",) if levels == "single" else ("aux", "main")


def _lambda(cfg: MethodConfig, kind: str, level: str) -> float:
    return getattr(cfg, f"lambda_{kind}_{level}")


def fool(disc: nn.Module, d_input: torch.Tensor, cfg: MethodConfig) -> torch.Tensor:
    """The segmenter's adversarial loss: the (frozen) discriminator's output on a target input,
    against the source label 0 (both official loops: ``bce_loss(D(x), source_label)``)."""
    return losses.gan_loss(losses.upcast(disc(d_input)), losses.SOURCE_DOMAIN, cfg.gan_loss)


# The segmenter's target terms, one function per paper: (method, method config, target output
# with logits upsampled, discriminators) -> {name: lambda * term} for each adapted level.


def feature_adv_terms(method, cfg: MethodConfig, out: SegOutput, discs) -> dict[str, torch.Tensor]:
    """Feature-level adversarial (Hoffman et al. 2016, FCNs in the wild): backbone features ->
    discriminator -> BCE against "source"."""
    return {f"adv_{lvl}": _lambda(cfg, "adv", lvl) * fool(discs[lvl], out.feature_map(lvl), cfg)
            for lvl in level_names(cfg.levels)}


def adaptsegnet_terms(method, cfg: MethodConfig, out: SegOutput, discs) -> dict[str, torch.Tensor]:
    """AdaptSegNet (Tsai et al., CVPR 2018): softmax -> discriminator -> BCE against "source";
    the official ``bce_loss(model_D2(F.softmax(pred_target2)), source_label)``."""
    return {f"adv_{lvl}": _lambda(cfg, "adv", lvl) * fool(discs[lvl], softmax(out.logits(lvl)), cfg)
            for lvl in level_names(cfg.levels)}


def minent_terms(method, cfg: MethodConfig, out: SegOutput, discs) -> dict[str, torch.Tensor]:
    """ADVENT MinEnt (Vu et al., CVPR 2019): the normalised entropy of each level's softmax;
    the official ``entropy_loss(F.softmax(pred_trg_main))``."""
    return {f"ent_{lvl}": _lambda(cfg, "ent", lvl) * losses.entropy_loss(softmax(out.logits(lvl)))
            for lvl in level_names(cfg.levels)}


def advent_terms(method, cfg: MethodConfig, out: SegOutput, discs) -> dict[str, torch.Tensor]:
    """ADVENT AdvEnt (Vu et al., CVPR 2019): softmax -> weighted self-information ->
    discriminator -> BCE against "source"; the official
    ``bce_loss(d_main(prob_2_entropy(F.softmax(pred_trg_main))), source_label)``."""
    terms = {}
    for lvl in level_names(cfg.levels):
        prob = softmax(out.logits(lvl))
        info = losses.weighted_self_information(prob)  # -p log2(p) / log2(C), per class
        terms[f"adv_{lvl}"] = _lambda(cfg, "adv", lvl) * fool(discs[lvl], info, cfg)
    return terms


def disc_input(method: Method, out: SegOutput, level: str) -> torch.Tensor:
    """What ``method``'s discriminator of ``level`` sees of the (upsampled) output ``out``."""
    if method.disc_input is None:
        raise ValueError(f"method {method.name!r} has no discriminator")
    return method.disc_input.view(method.disc_input.tap(out, level))


def adversarial_terms(method, cfg: MethodConfig, out: SegOutput, discs) -> dict[str, torch.Tensor]:
    """Any row's adversarial term from its :class:`DiscInput` alone: what the discriminator
    sees -> discriminator -> BCE against "source" (for new rows; the built-in ones write
    theirs out above, and tests check that they equal this)."""
    return {f"adv_{lvl}": _lambda(cfg, "adv", lvl) * fool(discs[lvl], disc_input(method, out, lvl), cfg)
            for lvl in level_names(cfg.levels)}


# (method, method config, upsampled target output, discriminators) -> weighted terms by name
TargetLoss = Callable[..., dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Batch:
    """One step's images of one domain, and their labels (``None`` for the target)."""

    image: torch.Tensor
    label: torch.Tensor | None = None


# (source batch, target batch) -> the source batch the step trains on
SourceTransform = Callable[[Batch, Batch], Batch]


@dataclass(frozen=True)
class Method:
    """One row of the table.

    Attributes:
        name: the ``method.name`` of configs.
        target_term: what the target term is, in words (tables, notebooks): ``"none"``,
            ``"forward_only"``, ``"entropy"``, ``"adversarial"``, or a new method's own name.
        disc_input: what the discriminators see; ``None``: the method has none.
        paper: where the method comes from.
        target_loss: the segmenter's target terms, already weighted by their lambdas
            (``None``: no target loss; with ``target_term="forward_only"`` the target batch is
            still forwarded, without gradient).
        source_transform: changes the source batch using the target batch before the step.
    """

    name: str
    target_term: str
    disc_input: DiscInput | None = None
    paper: str = ""
    target_loss: TargetLoss | None = None
    source_transform: SourceTransform | None = None

    @property
    def uses_target(self) -> bool:
        return self.target_term != "none" or self.source_transform is not None

    @property
    def has_discriminator(self) -> bool:
        return self.disc_input is not None


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("source_only", "none", paper="DeepLab-v2 trained on source only"),
        Method("source_only_tgt_bn", "forward_only", paper="control: target batch-norm statistics"),
        Method("feature_adv", "adversarial", FEATURES, "Hoffman et al. 2016 (FCNs in the wild)",
               feature_adv_terms),
        Method("output_adv", "adversarial", SOFTMAX, "Tsai et al., CVPR 2018 (AdaptSegNet)",
               adaptsegnet_terms),
        Method("minent", "entropy", paper="Vu et al., CVPR 2019 (ADVENT, MinEnt)",
               target_loss=minent_terms),
        Method("advent", "adversarial", SELF_INFORMATION, "Vu et al., CVPR 2019 (ADVENT, AdvEnt)",
               advent_terms),
    ]
}


def get(name: str) -> Method:
    """The method called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    if name not in METHODS:
        raise ConfigError(f"'method.name' must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]


def register(method: Method, replace: bool = False) -> Method:
    """Add a method to the table, so that ``method.name`` in a config selects it."""
    if method.name in METHODS and not replace:
        raise ValueError(f"a method called {method.name!r} exists; pass replace=True to change it")
    if method.has_discriminator and method.target_loss is None:
        raise ValueError(f"method {method.name!r} has a discriminator but no target loss")
    METHODS[method.name] = method
    return method


def target_losses(
    method: Method,
    cfg: MethodConfig,
    out_tgt: SegOutput,
    discs: dict[str, nn.Module],
    source_prior: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The segmenter's target terms, *already weighted by their lambdas*: the method's own,
    then ADVENT's class-ratio prior when ``method.lambda_cp > 0``."""
    terms = method.target_loss(method, cfg, out_tgt, discs) if method.target_loss else {}
    if cfg.lambda_cp > 0 and method.target_loss is not None:
        if source_prior is None:
            # The prior is the source split's class shares: the step sees one batch, not the
            # split, so whoever holds the datasets passes it (segda.train.fit does).
            raise ValueError(
                f"method.lambda_cp = {cfg.lambda_cp} (ADVENT's class-ratio prior) needs the source "
                "class prior: pass source_prior=torch.as_tensor(data.source_prior(), "
                "dtype=torch.float32) to segda.step.train_step, data being the datasets "
                "(segda.train.fit and segda.notebook.train_preset compute it themselves)")
        terms["cp_main"] = cfg.lambda_cp * losses.class_ratio_prior_loss(
            softmax(out_tgt.main), source_prior, cfg.cp_mu
        )
    return terms


def discriminator_losses(
    method: Method,
    cfg: MethodConfig,
    discs: dict[str, nn.Module],
    d_inputs: dict[str, torch.Tensor],
    domain: str,
    logits: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Each discriminator's loss on one domain's *detached* inputs (source labelled 0, target
    1), halved as in both official loops. The official loop calls this for the source, runs
    backward, then for the target, so the two graphs are never alive together.

    ``logits``: a dict that receives each level's discriminator output, detached (the step's
    diagnostics read their accuracy from it instead of running the discriminators again)."""
    label = losses.SOURCE_DOMAIN if domain == "src" else losses.TARGET_DOMAIN
    terms = {}
    for lvl in level_names(cfg.levels):
        out = losses.upcast(discs[lvl](d_inputs[lvl].detach()))
        if logits is not None:
            logits[lvl] = out.detach()
        terms[f"disc_{lvl}_{domain}"] = 0.5 * losses.gan_loss(out, label, cfg.gan_loss)
    return terms

