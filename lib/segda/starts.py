"""Where a run starts, and the config it trains with: what the experiment suite
(:mod:`segda.experiments`) and the teaching notebooks (:mod:`segda.notebook`) share.

An embedded adaptation row of a seed starts from one source-only model, as ADVENT starts from
pretrained weights: the checkpoint the package ships (:mod:`segda.shipped`; every seed then
adapts the same model) or the seed's own ``embedded/source_pretrain`` run. Every other preset
(the oracle, the source-only pretraining itself, every paper preset) starts from its own
initialisation. :func:`starts_from` is that rule, :func:`start_checkpoint` the checkpoint it
names, :func:`run_config` the one config builder on top of a preset. A row whose finished run
ships with the package (the oracle at the notebooks' defaults, :data:`segda.shipped.SHIPPED_RUNS`)
is copied instead of trained when its config is exactly the shipped run's
(:func:`install_shipped_run`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segda import config, io, rows, runs, shipped, train
from segda.config import TrainConfig


def run_config(preset: str, seed: int, overrides: dict | None = None,
               init: str | Path | None = None) -> TrainConfig:
    """The config of one run of ``preset`` (``"embedded/advent"``) for seed ``seed``:
    ``overrides`` (``{"optim.lr": 1e-3}``) on top of the preset, and ``init`` (the checkpoint
    it starts from, :func:`start_checkpoint`; ``None`` keeps the preset's)."""
    over = {"run.seed": seed, **(overrides or {})}
    if init is not None:
        over["model.init_checkpoint"] = str(init)
    return config.load(preset, over)


def starts_from(preset: str, pretrained: str = "shipped") -> str:
    """Where ``preset``'s row of a seed starts, the one decision the suite and the notebooks
    share: ``"shipped"`` (the shipped source-only checkpoint; every seed then adapts the same
    model), ``"own"`` (the seed's own ``embedded/source_pretrain`` run) or ``"preset"`` (the
    preset's own initialisation: scratch for the embedded rows that start there,
    :func:`segda.rows.warm_started`, and every paper preset).

    ``pretrained`` is ``"shipped"`` or ``"train"``; anything else is refused before anything
    trains."""
    if pretrained not in ("shipped", "train"):
        raise config.ConfigError(f"pretrained must be 'shipped' or 'train', got {pretrained!r}")
    if not rows.warm_started(preset):
        return "preset"
    return "shipped" if pretrained == "shipped" else "own"


def start_checkpoint(preset: str, pretrained: str, own: Callable[[], Path],
                     model: str | None = None) -> str | Path | None:
    """The checkpoint ``preset``'s row of a seed starts from (:func:`starts_from`): the shipped
    one (``"shipped:<name>"``; refused for a run of another ``model`` than the one it holds),
    the seed's own pretraining (``own()`` trains or reuses it, :func:`warm_start`, and returns
    its checkpoint), or ``None``: the preset's own initialisation."""
    start = starts_from(preset, pretrained)
    if start == "preset":
        return None
    if start == "shipped":
        return _shipped(model)
    return own()


def _shipped(model: str | None) -> str:
    held = shipped.entry(shipped.EMBEDDED_PRETRAINED)["model"]
    if model not in (None, held):
        raise config.ConfigError(
            f"the shipped pretrained checkpoint holds the {held!r} model, not {model!r}; "
            "set pretrained = \"train\" to pretrain this model on the source first")
    return shipped.reference()


def warm_start(run_dir: str | Path, pretrain_cfg: TrainConfig, data=None,
               progress_bar: str | None = None) -> Path:
    """The checkpoint every adaptation row of a seed starts from when it pretrains its own:
    ``embedded/source_pretrain`` trained (or reused) in ``run_dir``."""
    train.ensure_run(run_dir, pretrain_cfg, data=data, progress_bar=progress_bar)
    return Path(run_dir) / runs.CHECKPOINT


def shipped_run_for(preset: str, cfg: TrainConfig) -> str | None:
    """The name of the shipped run (:data:`segda.shipped.SHIPPED_RUNS`) that is a finished run
    of exactly ``cfg`` (its ``config.yaml`` equals ``cfg``), or ``None``."""
    name = shipped.SHIPPED_RUNS.get(preset)
    if name is None or name not in shipped.read_manifest():
        return None
    folder = shipped.FOLDER / shipped.entry(name)["folder"]
    return name if runs.read_config(folder) == cfg else None


def install_shipped_run(preset: str, run_dir: str | Path, cfg: TrainConfig) -> str | None:
    """Copy the shipped run of ``preset`` into ``run_dir`` when it is a finished run of exactly
    ``cfg`` and ``run_dir`` holds no run of it yet (an unfinished one is replaced); its files
    are checked by SHA-256 first (:func:`segda.shipped.run_files`). Returns the shipped run's
    name, or ``None`` when nothing was copied (no such shipped run, another config, or a
    finished run already there). Raises :class:`segda.runs.RunLockedError` while another
    process trains into ``run_dir``."""
    name = shipped_run_for(preset, cfg)
    if name is None or runs.is_complete(run_dir, cfg):
        return None
    old = runs.read_config(run_dir)
    if old is not None and old != cfg and runs.holds_run(run_dir):
        return None  # a run of another config: training refuses it and says so
    files = shipped.run_files(name)
    with runs.lock(run_dir):
        if runs.holds_run(run_dir):
            runs.clear_results(run_dir)  # an unfinished run of this config
        for file, path in files.items():  # metrics.json, which finishes a run, last
            io.copy_atomic(path, Path(run_dir) / file)
    return name
