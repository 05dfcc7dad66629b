"""Typed run configuration: dataclasses, YAML presets, strict merging.

A configuration is built as ``defaults <- one preset <- overrides``::

    cfg = segda.config.load("embedded/advent", {"optim.max_iters": 300, "run.seed": 1})

Presets are partial YAML files under ``segda/presets/`` (``paper/*.yaml`` reproduce the
papers' rows, ``embedded/*.yaml`` are tuned for the embedded CPU benchmark). Unknown keys and
values of the wrong type raise :class:`ConfigError` naming the key. There is no global config.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segda.errors import UserError

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError, UserError):
    """A configuration key is unknown, or its value has the wrong type or an invalid value."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "small"  # "small" | "deeplabv2_resnet101" | "deeplab_vgg16"
    num_classes: int = 19
    multi_level: bool = True
    aspp_branches: int = 4  # 4 = ADVENT (all branches); 2 = AdaptSegNet's code
    bn_mode: str = "train"  # "train" (official) | "frozen" (eval-mode BN)
    init_checkpoint: str = ""  # official init / released model / segda weights; "" = none
    init_kind: str = "auto"  # see segda.models.checkpoints.load_checkpoint


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "embedded"  # "embedded" | "gta5_cityscapes" | "synthia_cityscapes"
    root: str = "data"
    train_on: str = "source"  # "target" trains an oracle on labelled target images
    source_size: tuple[int, int] = (128, 64)  # (W, H), as the official INPUT_SIZE_SOURCE
    target_size: tuple[int, int] = (128, 64)  # (W, H)
    batch_size: int = 8  # images per domain per iteration
    num_workers: int = 0
    flip: bool = False  # official: no augmentation
    normalization: str = "auto"  # "auto" | "caffe" | "imagenet" | "embedded"
    # embedded benchmark only: the target's shift (segda.data.synthetic.SHIFTS names the settings;
    # the default is "beyond_statistics", docs/embedded_benchmark.md "The gap's shape"):
    palette_shift: float = 0.0  # how far its palette moves toward the dull real one
    light_shift: float = 0.0  # strength of its lighting (gain, cast, gradient, shadows, gamma)
    embedded_seed: int = 0  # embedded benchmark only: which generated world
    # embedded benchmark only: how far the target's class balance moves from the source's
    # (0 = the source's balance, 1 = the benchmark's full shift); source images never change.
    balance_shift: float = 1.0
    # embedded benchmark only: the target's per-image conditions (exposure, white balance,
    # contrast, haze) and how alike its confusable classes look (sidewalk/road, terrain/vegetation)
    condition_shift: float = 0.5
    class_confusion: float = 1.0
    # Subsets of the real datasets: a list file, one name per line as in the official lists
    # (gta5_list/train.txt, cityscapes_list/{train,val}.txt); "" = the official list, whose
    # count is checked. source_list names GTA5/SYNTHIA images, target_list Cityscapes train,
    # val_list Cityscapes val.
    source_list: str = ""
    target_list: str = ""
    val_list: str = ""


@dataclass(frozen=True)
class MethodConfig:
    name: str = "source_only"  # a key of segda.methods.METHODS
    levels: str = "single"  # "single" (main head) | "multi" (aux + main)
    lambda_seg_main: float = 1.0
    lambda_seg_aux: float = 0.1  # used whenever the segmenter has an aux head
    lambda_adv_main: float = 0.001
    lambda_adv_aux: float = 0.0002
    lambda_ent_main: float = 0.001
    lambda_ent_aux: float = 0.0002
    lambda_cp: float = 0.0  # ADVENT's class-ratio prior; 0 disables it
    cp_mu: float = 0.5
    gan_loss: str = "bce"  # "bce" (vanilla) | "lsgan"
    disc_ndf: int = 64
    # How many of the output-space discriminator's last stride-2 convolutions run at stride 1
    # (0 = official): 3 gives a 128x64 map the official 32x16 verdicts of a 1024x512 one.
    disc_patch_stride1: int = 0


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "sgd"  # "sgd" (official) | "adam"
    lr: float = 2.5e-4
    head_lr_mult: float = 10.0  # official: heads (layer5/layer6) at 10x
    momentum: float = 0.9
    weight_decay: float = 5e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    # "official": backbone tensors listed once per ancestor module as the official code does,
    # so SGD steps most of them 3-4 times per iteration; "unique": each tensor once.
    param_groups: str = "official"
    lr_disc: float = 1e-4
    disc_betas: tuple[float, float] = (0.9, 0.99)
    poly_power: float = 0.9
    max_iters: int = 250000  # the poly schedule's horizon
    early_stop: int = 120000  # iterations actually run


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when present
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    ce_impl: str = "ignore_index"  # "ignore_index" (fast) | "masked" (official formulation)
    # Fast-path switches (segda.fastpath); each can be turned on or off alone.
    optim_impl: str = "reference"  # "reference" | "foreach" | "fused" (same update, fewer kernels)
    compile: str = "none"  # "none" | "default" | "max-autotune-no-cudagraphs" (torch.compile mode)
    compile_scope: str = "step"  # "step": forward + losses + D as compiled stages | "modules"
    compile_backend: str = "inductor"  # "inductor" | "aot_eager" (tracing only, for tests)
    cuda_graphs: bool = False  # replay compiled stages as CUDA graphs (needs compile, CUDA)
    align_corners: bool = True
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    eval_max_images: int = 0  # 0: the whole validation split
    checkpoint_every: int = 0  # 0: only at the end
    keep_snapshots: bool = False  # also keep iter_XXXXXX.pth at every checkpoint
    tensorboard: bool = False
    progress: bool = True
    # Also log what the step does, without changing it (segda.step.DIAGNOSTICS): the gradient
    # norm of the source and of the target terms, and each discriminator's accuracy per domain.
    diagnostics: bool = False


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: dict[str, Any]) -> TrainConfig:
        """A new config with ``overrides`` (dotted or nested keys) merged strictly."""
        return _validate(_merge(self, _nest(overrides), ""))


CHOICES: dict[str, tuple[str, ...]] = {
    "model.name": ("small", "deeplabv2_resnet101", "deeplab_vgg16"),
    "model.bn_mode": ("train", "frozen"),
    "data.dataset": ("embedded", "gta5_cityscapes", "synthia_cityscapes"),
    "data.train_on": ("source", "target"),
    "data.normalization": ("auto", "caffe", "imagenet", "embedded"),
    "method.levels": ("single", "multi"),
    "method.gan_loss": ("bce", "lsgan"),
    "optim.optimizer": ("sgd", "adam"),
    "optim.param_groups": ("official", "unique"),
    "run.ce_impl": ("ignore_index", "masked"),
    "run.optim_impl": ("reference", "foreach", "fused"),
    "run.compile": ("none", "default", "max-autotune-no-cudagraphs"),
    "run.compile_scope": ("step", "modules"),
    "run.compile_backend": ("inductor", "aot_eager", "eager"),
}


# Numbers with a lower bound (rates, weights and counts); a value below it is a config error.
LOWER_BOUNDS: dict[str, float] = {
    "model.num_classes": 1,
    "data.batch_size": 1,
    "data.num_workers": 0,
    **{f"method.{name}": 0.0 for name in (
        "lambda_seg_main", "lambda_seg_aux", "lambda_adv_main", "lambda_adv_aux",
        "lambda_ent_main", "lambda_ent_aux", "lambda_cp", "cp_mu")},
    "method.disc_ndf": 1,
    **{f"optim.{name}": 0.0 for name in (
        "lr", "head_lr_mult", "momentum", "weight_decay", "lr_disc", "poly_power")},
    "optim.max_iters": 1,
    "optim.early_stop": 1,  # 0 would make a "finished" run that trained nothing
    "run.seed": 0,  # numpy's seeds are non-negative
    "data.embedded_seed": 0,  # the generator's seeds are numpy's
    **{f"run.{name}": 0 for name in (
        "log_every", "eval_every", "eval_max_images", "checkpoint_every")},
}


# Numbers with a closed range. The embedded generator's settings interpolate between the source's
# look (0) and the full shift (1); a value outside renders images no setting describes (negative
# colours, a label balance past the generator's), so it is refused naming the key.
RANGES: dict[str, tuple[float, float]] = {
    **{f"data.{name}": (0.0, 1.0) for name in (
        "palette_shift", "light_shift", "balance_shift", "condition_shift", "class_confusion")},
    # the output-space discriminator has five convolutions (segda.models.discriminators)
    "method.disc_patch_stride1": (0, 5),
    "optim.momentum": (0.0, 1.0),  # above 1 SGD's steps grow without bound
}


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [_to_plain(v) for v in obj]
    return obj


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 1}`` -> ``{"optim": {"lr": 1}}``; nested dicts pass through."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key!r}: {part!r} is not a section")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return nested


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{key!r} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key!r} has the wrong type: {value!r}")
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads 1e-4 and 1e6 (no dot) as strings; any Python float literal is a number.
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key!r} must be a number, got {value!r}") from None
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key!r} must be a finite number, got {value!r}")
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is int and not isinstance(value, bool) and _is_whole(value):
        # 1e3 and 200.0 are whole numbers, but in another notation than a count's
        raise ConfigError(f"{key!r} must be a whole number, got {value!r}; write it as "
                          f"{int(float(value))}")
    if tp in (str, bool) and isinstance(value, tp):
        return value
    if tp is bool:
        raise ConfigError(f"{key!r} must be true or false, got {value!r}")
    if tp is type(None) and value is None:
        return None
    raise ConfigError(f"{key!r} must be of type {getattr(tp, '__name__', tp)}, got {value!r}")


def _is_whole(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number == int(number)


def _merge(obj: Any, updates: dict[str, Any], prefix: str) -> Any:
    if not isinstance(updates, dict):
        raise ConfigError(f"{prefix.rstrip('.')!r} is a section; expected a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in updates.items():
        full = prefix + key
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; valid keys here: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, full + ".")
        else:
            changes[key] = _coerce(value, hints[key], full)
    return dataclasses.replace(obj, **changes)


def _validate(cfg: TrainConfig) -> TrainConfig:
    plain = cfg.to_dict()
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        if plain[section][name] not in allowed:
            raise ConfigError(f"{key!r} must be one of {allowed}, got {plain[section][name]!r}")
    if cfg.method.levels == "multi" and not cfg.model.multi_level:
        raise ConfigError("'method.levels' is 'multi' but 'model.multi_level' is false")
    if cfg.model.aspp_branches not in (1, 2, 3, 4):
        raise ConfigError(f"'model.aspp_branches' must be 1..4, got {cfg.model.aspp_branches}")
    for key, low in LOWER_BOUNDS.items():
        section, name = key.split(".")
        value = plain[section][name]
        if value < low:
            raise ConfigError(f"{key!r} must be at least {low}, got {value!r}")
    for key, (low, high) in RANGES.items():
        section, name = key.split(".")
        value = plain[section][name]
        if not low <= value <= high:
            raise ConfigError(f"{key!r} must be in [{low}, {high}], got {value!r}")
    for key in ("data.source_size", "data.target_size"):
        section, name = key.split(".")
        if min(plain[section][name]) < 1:
            raise ConfigError(f"{key!r} is (W, H) in pixels, each at least 1, got {plain[section][name]!r}")
    for key in ("optim.adam_betas", "optim.disc_betas"):
        section, name = key.split(".")
        if not all(0.0 <= b < 1.0 for b in plain[section][name]):
            raise ConfigError(f"{key!r} are Adam's two decay rates, each in [0, 1), "
                              f"got {plain[section][name]!r}")
    if cfg.optim.early_stop > cfg.optim.max_iters:
        raise ConfigError(
            f"'optim.early_stop' ({cfg.optim.early_stop}) must not exceed 'optim.max_iters' "
            f"({cfg.optim.max_iters}), the poly schedule's horizon: set optim.max_iters to at "
            f"least {cfg.optim.early_stop} too, or a smaller optim.early_stop")
    check_embedded_sizes(cfg.data)
    lists = [k for k in ("source_list", "target_list", "val_list") if getattr(cfg.data, k)]
    if cfg.data.dataset == "embedded" and lists:  # it renders its images: no list reads them
        raise ConfigError(f"'data.{lists[0]}' names the images of a real dataset, but "
                          "data.dataset is 'embedded', which renders its own: remove it, or set "
                          "data.dataset to gta5_cityscapes or synthia_cityscapes")
    return cfg


def check_embedded_sizes(data: DataConfig) -> None:
    """The embedded benchmark renders both domains at one size, so changing one of the two
    sizes alone is a config error naming both keys (the real datasets take two sizes)."""
    if data.dataset != "embedded" or tuple(data.source_size) == tuple(data.target_size):
        return
    raise ConfigError(
        f"'data.source_size' {list(data.source_size)} and 'data.target_size' "
        f"{list(data.target_size)} differ, but the embedded benchmark renders both domains at "
        "one size: set both keys to the same [W, H] (--set data.source_size=[W,H] --set "
        "data.target_size=[W,H]; notebooks: image_size=[W, H])")


def preset_path(name: str | Path) -> Path:
    """Resolve a preset name (``"paper/advent_multi"``) or a path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    if path.suffix in (".yaml", ".yml"):
        raise ConfigError(f"preset file {path} does not exist; give an existing YAML file or a "
                          f"preset name ({', '.join(list_presets())})")
    candidate = PRESET_DIR / f"{name}.yaml"
    if not candidate.exists():
        raise ConfigError(f"unknown preset {str(name)!r}{_did_you_mean(str(name))}; available: "
                          f"{', '.join(list_presets())}")
    return candidate


def _did_you_mean(name: str) -> str:
    """`` (did you mean 'embedded/advent' or 'paper/advent'?)``: presets of that name in a
    folder (``advent``), then near spellings (``embedded/advnt``); empty when none is close."""
    import difflib

    presets = list_presets()
    close = [p for p in presets if p.split("/")[-1] == name] or \
        difflib.get_close_matches(name, presets, n=2, cutoff=0.8)
    return f" (did you mean {' or '.join(repr(p) for p in close)}?)" if close else ""


def list_presets() -> list[str]:
    return sorted(str(p.relative_to(PRESET_DIR).with_suffix("")) for p in PRESET_DIR.rglob("*.yaml"))


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate keys (plain YAML keeps the last one silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def parse_yaml(text: str) -> Any:
    """Parse YAML strictly (duplicate keys are errors); malformed YAML is a :class:`ConfigError`
    (and so are tags that would build Python objects: the loader is a safe one)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        problem = " ".join(str(err).split())
        raise ConfigError(f"not valid YAML ({problem})") from None


def parse_overrides(items: list[str] | None, flag: str = "--set") -> dict[str, Any]:
    """``["optim.lr=1e-3", "method.levels=multi"]`` (the CLI's ``--set``) -> typed overrides,
    each value read as a YAML scalar; an empty value (``model.init_checkpoint=``) is the empty
    string, as ``''`` is. ``flag``: the option the items came with, named in errors."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        if not value.strip():
            out[key] = ""  # YAML reads nothing as null, which no config key takes
            continue
        try:
            out[key] = parse_yaml(value)
        except ConfigError as err:
            raise ConfigError(f"{flag} {key}={value}: {err}") from None
    return out


def read_preset(name: str | Path) -> dict[str, Any]:
    """The preset's YAML content (a partial config), without its ``description`` entry."""
    path = preset_path(name)
    try:
        data = parse_yaml(path.read_text())
    except ConfigError as err:
        raise ConfigError(f"preset {path}: {err}") from None
    if data is None:  # an empty file would train the built-in defaults without a word
        raise ConfigError(f"preset file {path} is empty; give it the keys of a run (e.g. copy "
                          f"{PRESET_DIR / 'embedded' / 'advent.yaml'} and change it)")
    if not isinstance(data, dict):
        raise ConfigError(f"preset {str(name)!r} must be a mapping")
    data.pop("description", None)
    data.pop("source", None)
    return data


def load(preset: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """defaults <- preset <- overrides, strictly merged and validated."""
    cfg = TrainConfig()
    if preset:
        cfg = _merge(cfg, _nest(read_preset(preset)), "")
    return cfg.replace(overrides or {})


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved with :meth:`TrainConfig.to_dict` (checkpoints, run folders)."""
    return TrainConfig().replace(data)
