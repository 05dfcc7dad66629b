"""Loading official and segda checkpoints, strictly, with a report of what happened.

Checkpoint kinds:

* ``"init"``: the DeepLab-v2 ImageNet(+COCO) init files, AdaptSegNet's
  ``DeepLab_resnet_pretrained_init-f81d91e8.pth`` and ADVENT's
  ``DeepLab_resnet_pretrained_imagenet.pth``. Keys may carry a leading ``Scale.`` (the wrapper
  module of the original multi-scale DeepLab); it is stripped. The init's own classifier
  (``layer5``, 2048 input channels) is dropped, as both official training scripts do, so both
  heads keep their N(0, 0.01) init. Every backbone key must be present.
* ``"adapted"``: released adapted models and segda's own weights; keys must match exactly.
  AdaptSegNet's released ResNet models need ``aspp_branches=2`` (see :func:`aspp_branches_for`)
  and a multi-level model (AdaptSegNet always builds both heads).
* ``"discriminator"``: FC discriminators; AdaptSegNet's ``conv1..conv4/classifier`` names are
  mapped onto the ``nn.Sequential`` indices ``0, 2, 4, 6, 8`` (ADVENT's names, kept as they are).

``num_batches_tracked`` buffers may always be absent (PyTorch-0.3 checkpoints, e.g. AdaptSegNet's
releases, have none); the model then keeps its own counters. Files are always read with
``weights_only=True``, so a checkpoint cannot run code when it is loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from segda.errors import UserError

KINDS = ("auto", "init", "adapted", "discriminator")
INIT_PREFIX = "Scale."  # the wrapper module of the original multi-scale DeepLab
_INIT_PREFIX = INIT_PREFIX
_INIT_CLASSIFIER = "layer5."
# AdaptSegNet FCDiscriminator attribute -> index in the nn.Sequential FCDiscriminator.
_ASN_DISC_NAMES = {"conv1": "0", "conv2": "2", "conv3": "4", "conv4": "6", "classifier": "8"}
# Name-based rule for AdaptSegNet releases (case-sensitive: ADVENT's are "gta2cityscapes_*").
_ASN_NAME_PATTERNS = (
    r"GTA2Cityscapes", r"ucmerced", r"(?i:adaptseg)", r"(?i:vgg)",
    r"DeepLab_resnet_pretrained_init", r"cityscapes_oracle", r"DA_Seg_models",
)
_MAX_LISTED = 10


class CheckpointMismatchError(RuntimeError, UserError):
    """A checkpoint's keys or shapes do not fit the model."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did.

    Attributes:
        source: the file (or a description of the in-memory state_dict).
        kind: the kind used (after ``"auto"`` detection).
        loaded: model keys that received a checkpoint value.
        dropped: checkpoint keys (as named in the file) deliberately ignored: the init's
            classifier.
        kept_init: model keys left at their current value (heads for ``"init"``, absent
            ``num_batches_tracked`` buffers).
        missing, unexpected, shape_mismatches: problems; non-empty only with ``strict=False``.
    """

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    kept_init: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def __str__(self) -> str:
        return (
            f"{self.source} (kind {self.kind!r}): loaded {len(self.loaded)}, "
            f"dropped {len(self.dropped)}, kept init {len(self.kept_init)}, "
            f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"shape mismatches {len(self.shape_mismatches)}"
        )


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f", ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def _extract_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):  # type: ignore[union-attr]
            return dict(obj)  # type: ignore[arg-type]
    raise ValueError(
        f"{source}: expected a state_dict, or a dict holding one under 'state_dict' or 'model'"
    )


def detect_kind(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Guess the checkpoint kind from its keys (the rule ``kind="auto"`` uses).

    ``Scale.``-prefixed keys or a ``layer5`` head on 2048 channels -> ``"init"``; a 4x4
    ``conv1.weight`` or ``0.weight`` -> ``"discriminator"``; anything else -> ``"adapted"``.
    Note that AdaptSegNet's Cityscapes oracle (``Res_Deeplab``, one ``layer5`` head on layer4)
    also looks like an init file; its head would be dropped, which the report shows.
    """
    if any(k.startswith(_INIT_PREFIX) for k in state_dict):
        return "init"
    head = state_dict.get(_INIT_CLASSIFIER + "conv2d_list.0.weight")
    if head is not None and head.dim() == 4 and head.shape[1] == 2048:
        return "init"
    for key in ("conv1.weight", "0.weight"):
        w = state_dict.get(key)
        if w is not None and w.dim() == 4 and tuple(w.shape[2:]) == (4, 4):
            return "discriminator"
    return "adapted"


def _head_prefixes(model: nn.Module) -> list[str]:
    if not hasattr(model, "head_roots"):
        raise ValueError(f"kind 'init' needs a segmenter with head_roots(); got {type(model)}")
    names = {id(m): name for name, m in model.named_modules()}
    return [names[id(m)] + "." for m in model.head_roots()]


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def load_state_dict_checked(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    kind: str = "auto",
    strict: bool = True,
    source: str = "<state_dict>",
) -> LoadReport:
    """Load an in-memory state_dict with the rules of :func:`load_checkpoint`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    sd = dict(state_dict)
    kind = detect_kind(sd) if kind == "auto" else kind
    report = LoadReport(source=source, kind=kind)
    optional: set[str] = set()  # model keys that may stay at their init
    if kind == "init":
        heads = _head_prefixes(model)
        drop = (_INIT_CLASSIFIER, *heads)
        report.dropped = [k for k in sd if k.removeprefix(_INIT_PREFIX).startswith(drop)]
        sd = {k.removeprefix(_INIT_PREFIX): v for k, v in sd.items() if k not in report.dropped}
        optional = {k for k in model.state_dict() if k.startswith(tuple(heads))}
    elif kind == "discriminator":
        sd = {_rename_asn_disc(k): v for k, v in sd.items()}

    target = model.state_dict()
    absent = [k for k in target if k not in sd]
    report.kept_init = [k for k in absent if k in optional or _is_counter(k)]
    report.missing = [k for k in absent if not (k in optional or _is_counter(k))]
    report.unexpected = [k for k in sd if k not in target]
    report.shape_mismatches = [
        f"{k}: checkpoint {list(sd[k].shape)} vs model {list(target[k].shape)}"
        for k in sd
        if k in target and sd[k].shape != target[k].shape
    ]
    if strict and not report.ok:
        problems = {
            "missing keys": report.missing,
            "unexpected keys": report.unexpected,
            "shape mismatches": report.shape_mismatches,
        }
        raise CheckpointMismatchError(
            f"checkpoint {source} (kind {kind!r}) does not fit {type(model).__name__}:"
            + "".join(_listing(title, items) for title, items in problems.items() if items)
        )
    to_load = {k: v for k, v in sd.items() if k in target and v.shape == target[k].shape}
    model.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    return report


def _rename_asn_disc(key: str) -> str:
    head, _, rest = key.partition(".")
    return f"{_ASN_DISC_NAMES[head]}.{rest}" if head in _ASN_DISC_NAMES else key


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike, kind: str = "auto", strict: bool = True
) -> LoadReport:
    """Load a checkpoint file into ``model`` (in place) and report what was loaded.

    Args:
        model: a segda segmenter or discriminator.
        path: a ``.pth`` holding a state_dict, or a dict with one under ``"state_dict"`` or
            ``"model"``. Read with ``torch.load(..., map_location="cpu", weights_only=True)``.
        kind: ``"init"``, ``"adapted"``, ``"discriminator"`` or ``"auto"`` (see
            :func:`detect_kind`); the module docstring describes each.
        strict: raise :class:`CheckpointMismatchError` on missing keys (other than those the
            kind allows), unexpected keys or shape mismatches. With ``strict=False`` the
            fitting keys are loaded and the problems are listed in the report.
    """
    source = os.fspath(path)
    obj = torch.load(source, map_location="cpu", weights_only=True)
    return load_loaded(model, obj, source, kind, strict)


def load_loaded(
    model: nn.Module, obj: object, source: str, kind: str = "auto", strict: bool = True
) -> LoadReport:
    """:func:`load_checkpoint` for a file's content the caller has read already (``source``
    names it in errors)."""
    return load_state_dict_checked(model, _extract_state_dict(obj, source), kind, strict, source)


def torchvision_resnet101_to_deeplab(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Map torchvision's ImageNet ResNet-101 weights onto :class:`DeepLabV2ResNet101` keys.

    The backbone's names and shapes coincide key for key (``conv1``, ``bn1``,
    ``layerX.Y.convK/bnK``, ``layerX.0.downsample.{0,1}``, BN running statistics and
    ``num_batches_tracked``), so the map keeps every tensor and only drops the 1000-way ``fc``
    classifier. Load the result with ``kind="init"`` (or save it under the ``Scale.`` prefix,
    as ``data_scripts/convert_torchvision_resnet101.py`` does, and ``kind="auto"`` finds it).

    It is an *approximate* init, not the official one: the same weights compute something else
    from layer2 on. Precisely, for the same tensors:

    * the stem (``conv1``, ``bn1``, ReLU) and ``layer1`` are the same function;
    * the stem max-pool: DeepLab uses ``ceil_mode=True``, torchvision ``ceil_mode=False``;
      outputs agree when the stem conv's output size is odd in both dimensions (input
      ``H = 33`` or ``65``, not 32 or 64), and DeepLab's is one larger otherwise;
    * ``layer2.0``: DeepLab (caffe) puts the stride 2 on the first 1x1 conv (``conv1``),
      torchvision (ResNet v1.5) on the 3x3 ``conv2``; the sizes agree but the values do not;
    * ``layer3`` and ``layer4``: torchvision downsamples by 2 in each (stride on ``conv2`` and
      ``downsample.0`` of block 0, no dilation); DeepLab keeps stride 1 and dilates every 3x3
      conv by 2 (``layer3``) and 4 (``layer4``), for an output stride of 8 instead of 32;
    * input: torchvision expects RGB in [0, 1] normalised with the ImageNet mean/std
      (``data.normalization=imagenet``); the caffe init expects BGR in 0..255 minus the mean;
    * BN layers have the same eps (1e-5) and momentum (0.1); DeepLab freezes their affine
      parameters during training.
    """
    out = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    if "conv1.weight" not in out or "layer4.2.conv3.weight" not in out:
        raise ValueError("this does not look like a torchvision ResNet-101 state_dict")
    return out


def aspp_branches_for(path_or_name: str | os.PathLike) -> int:
    """Head branches to sum for a checkpoint, by a name-based rule: 2 for AdaptSegNet, else 4.

    AdaptSegNet's released models were trained with its early-return head bug (only the
    dilation-6 and -12 branches are used), so they must be evaluated with 2 branches.

    2 is returned for AdaptSegNet's release names: ``GTA2Cityscapes_*`` (case-sensitive),
    ``DeepLab_resnet_pretrained_init``, ``cityscapes_oracle``, ``DA_Seg_models``, any name
    containing ``vgg`` (only AdaptSegNet ships a VGG DeepLab), any ``ucmerced`` URL and any path
    mentioning AdaptSegNet. Everything else gets 4: ADVENT's lower-case names
    (``gta2cityscapes_advent.pth``) and segda's own checkpoints. The rule only looks at the
    name: a renamed file, or a segda model trained with 2 branches, gets the wrong answer, so
    pass ``aspp_branches`` explicitly then.
    """
    name = os.fspath(path_or_name)
    return 2 if any(re.search(p, name) for p in _ASN_NAME_PATTERNS) else 4
