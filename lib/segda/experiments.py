"""The embedded-benchmark experiment: every method over seeds, warm-started like ADVENT.

Protocol (a warm start as ADVENT starts from pretrained weights; values from a prototype study):

1. ``embedded/source_pretrain``: the small segmenter trained on source from scratch;
2. ``embedded/oracle``: the same recipe on labelled target images (the upper reference);
3. each adaptation preset fine-tunes from (1) for the same number of iterations, including
   the plain ``source_only`` continuation and the batch-norm control, so every row has had the
   same amount of training (:func:`warm_start`);
4. the AdvEnt+MinEnt ensemble (0.5 / 0.5 sum of main logits, ADVENT's) is evaluated from the
   two trained models.

Gains are reported against plain source-only *and* against the batch-norm control
(:mod:`segda.results`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segda import config, evaluate, runs, train
from segda.config import TrainConfig
from segda.data import registry
from segda.results import ADAPTATION_PRESETS, ROW_NAMES

ENSEMBLE = ("advent", "minent")
# Presets trained from scratch; every other embedded preset starts from source_pretrain.
WARM_START_EXEMPT = ("source_pretrain", "oracle")


def is_warm_started(preset: str) -> bool:
    """Whether ``preset`` (``"embedded/advent"``) starts from the seed's pretrained model."""
    family, _, name = preset.rpartition("/")
    return family == "embedded" and name not in WARM_START_EXEMPT


def warm_start(run_dir: str | Path, pretrain_cfg: TrainConfig, data=None,
               progress_bar: str | None = None) -> Path:
    """The checkpoint every adaptation row of a seed starts from: ``embedded/source_pretrain``
    trained (or reused) in ``run_dir`` (``<seed folder>/source_pretrain``)."""
    train.ensure_run(run_dir, pretrain_cfg, data=data, progress_bar=progress_bar)
    return Path(run_dir) / runs.CHECKPOINT


def preset_config(preset: str, seed: int, overrides: dict | None = None, init: Path | None = None):
    over = {"run.seed": seed, **(overrides or {})}
    if init is not None:
        over["model.init_checkpoint"] = str(init)
    return config.load(f"embedded/{preset}", over)


def run_seed(
    run_root: str | Path,
    seed: int,
    presets: Sequence[str] = ADAPTATION_PRESETS,
    pretrain_overrides: dict | None = None,
    adapt_overrides: dict | None = None,
    oracle: bool = True,
    ensemble: bool = True,
) -> Path:
    """Train (or reuse) every run of one seed under ``run_root/seed{seed}``."""
    root = Path(run_root) / f"seed{seed}"
    pre_cfg = preset_config("source_pretrain", seed, pretrain_overrides)
    data = registry.build_datasets(pre_cfg.data, pre_cfg.model)
    init = warm_start(root / "source_pretrain", pre_cfg, data)
    if oracle:
        ora_cfg = preset_config("oracle", seed, pretrain_overrides)
        train.ensure_run(root / "oracle", ora_cfg, data=registry.build_datasets(ora_cfg.data))
    results = {}
    for preset in presets:
        cfg = preset_config(preset, seed, adapt_overrides, init)
        results[preset] = train.ensure_run(root / preset, cfg, data=data)
    if ensemble and all(name in results for name in ENSEMBLE):
        evaluate_ensemble(Path(run_root), seed, results, data)
    return root


def run_variant(
    run_root: str | Path,
    seed: int,
    preset: str,
    name: str,
    overrides: dict,
    pretrain_overrides: dict | None = None,
):
    """Train one embedded preset with ``overrides`` into ``run_root/seed{seed}/{name}``.

    Adaptation presets warm-start from the seed's ``source_pretrain`` checkpoint (trained
    first when missing), exactly like the rows of :func:`run_seed`, so a variant is paired
    per seed with the main table's rows (a lambda sweep, a longer schedule). Collected tables
    list variants after the main rows, under their folder name.
    """
    if name in ROW_NAMES:
        raise ValueError(f"variant name {name!r} is a main-table row; choose another name")
    root = Path(run_root) / f"seed{seed}"
    init = None
    if is_warm_started(f"embedded/{preset}"):
        pre_cfg = preset_config("source_pretrain", seed, pretrain_overrides)
        init = warm_start(root / "source_pretrain", pre_cfg,
                          registry.build_datasets(pre_cfg.data, pre_cfg.model))
    cfg = preset_config(preset, seed, overrides, init)
    return train.ensure_run(root / name, cfg, data=registry.build_datasets(cfg.data, cfg.model))


def evaluate_ensemble(
    run_root: str | Path,
    seed: int,
    results: dict,
    data,
    members: Sequence[str] = ENSEMBLE,
    weights: Sequence[float] = (0.5, 0.5),
    combine: str = "logits",
    max_images: int | None = None,
    device: str = "auto",
    name: str | None = None,
):
    """ADVENT's AdvEnt+MinEnt ensemble: weighted sum of the members' main logits.

    Writes ``run_root/seed{seed}/<name>/metrics.json`` (``name`` defaults to the members
    joined by ``+``: ``advent+minent``) in the run format, so the ensemble appears in
    :func:`segda.runs.collect` tables. Returns the target :class:`segda.evaluate.EvalResult`.
    """
    models = [results[name].seg for name in members]
    kw = dict(weights=list(weights), combine=combine, device=device, max_images=max_images)
    res = evaluate.evaluate(models, data.val_target, **kw)
    entry = {"iteration": results[members[0]].state.iteration,
             "target_miou": res.miou, "target_iou": [float(x) for x in res.iou]}
    if data.val_source is not None:
        res_src = evaluate.evaluate(models, data.val_source, **kw)
        entry.update(source_miou=res_src.miou, source_iou=[float(x) for x in res_src.iou])
    runs.write_metrics(Path(run_root) / f"seed{seed}" / (name or "+".join(members)), {
        "method": "+".join(members), "levels": "multi", "seed": seed, "train_on": "source",
        "iteration": entry["iteration"], "evals": [entry],
        "ensemble": {"members": list(members), "weights": list(weights), "combine": combine},
    })
    return res
