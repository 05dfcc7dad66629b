"""The embedded-benchmark experiment: every method over seeds, warm-started like ADVENT.

Protocol (a warm start as ADVENT starts from pretrained weights; values from a prototype study):

1. ``embedded/source_pretrain``: the small segmenter trained on source from scratch; by
   default the checkpoint the package ships (seed 0, :func:`make_shipped`), or each seed's own;
2. ``embedded/oracle``: the same recipe on labelled target images (the upper reference);
3. each adaptation preset fine-tunes from (1) for the same number of iterations, including
   the plain ``source_only`` continuation and the batch-norm control, so every row has had the
   same amount of training (:func:`starting_point`);
4. the AdvEnt+MinEnt ensemble (0.5 / 0.5 sum of main logits, ADVENT's) is evaluated from the
   two trained models.

Gains are reported against plain source-only *and* against the batch-norm control
(:mod:`segda.results`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from segda import config, evaluate, io, rows, runs, shipped, train
from segda.config import TrainConfig
from segda.data import registry


def warm_start(run_dir: str | Path, pretrain_cfg: TrainConfig, data=None,
               progress_bar: str | None = None) -> Path:
    """The checkpoint every adaptation row of a seed starts from: ``embedded/source_pretrain``
    trained (or reused) in ``run_dir`` (``<seed folder>/source_pretrain``)."""
    train.ensure_run(run_dir, pretrain_cfg, data=data, progress_bar=progress_bar)
    return Path(run_dir) / runs.CHECKPOINT


def preset_config(preset: str, seed: int, overrides: dict | None = None,
                  init: str | Path | None = None):
    over = {"run.seed": seed, **(overrides or {})}
    if init is not None:
        over["model.init_checkpoint"] = str(init)
    return config.load(f"embedded/{preset}", over)


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


def starting_point(root: Path, seed: int, pretrained: str = "shipped",
                   pretrain_overrides: dict | None = None, data=None,
                   preset: str = "embedded/source_only") -> str | Path | None:
    """The checkpoint ``preset``'s row of a seed starts from (:func:`starts_from`): the shipped
    one, or the seed's own ``source_pretrain`` run in ``root`` (trained first when missing);
    ``None`` for a row that starts from its preset's own initialisation."""
    start = starts_from(preset, pretrained)
    if start == "preset":
        return None
    if start == "shipped":
        return shipped.reference()
    pre_cfg = preset_config("source_pretrain", seed, pretrain_overrides)
    data = data if data is not None else registry.build_datasets(pre_cfg.data, pre_cfg.model)
    return warm_start(root / "source_pretrain", pre_cfg, data)


def run_seed(
    run_root: str | Path,
    seed: int,
    presets: Sequence[str] | None = None,
    pretrain_overrides: dict | None = None,
    adapt_overrides: dict | None = None,
    oracle: bool = True,
    ensemble: bool = True,
    pretrained: str = "shipped",
) -> Path:
    """Train (or reuse) every run of one seed under ``run_root/seed{seed}``, adaptation rows
    (``presets``; by default the suite's, :func:`segda.rows.adaptation`) starting from
    :func:`starting_point`."""
    presets = rows.adaptation() if presets is None else presets
    root = Path(run_root) / f"seed{seed}"
    pre_cfg = preset_config("source_pretrain", seed, pretrain_overrides)
    data = registry.build_datasets(pre_cfg.data, pre_cfg.model)
    init = starting_point(root, seed, pretrained, pretrain_overrides, data)
    if oracle:
        ora_cfg = preset_config("oracle", seed, pretrain_overrides)
        train.ensure_run(root / "oracle", ora_cfg, data=registry.build_datasets(ora_cfg.data))
    results = {}
    for preset in presets:
        cfg = preset_config(preset, seed, adapt_overrides, init)
        results[preset] = train.ensure_run(root / preset, cfg, data=data)
    if ensemble and all(name in results for name in rows.ensemble().members):
        evaluate_ensemble(Path(run_root), seed, results, data)
    return root


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: the embedded preset it trains with ``overrides`` into the folder
    ``name`` of each seed, and the run of the same seed its gain is paired with (``control``,
    a folder name: a main row or another study run of the same setting). A study run without
    overrides is a main row, listed so that its study's table holds it."""

    name: str
    preset: str
    overrides: tuple[tuple[str, object], ...] = ()
    control: str = "source_only"


def _study_run(name: str, preset: str, control: str = "source_only", **overrides) -> StudyRun:
    return StudyRun(name, preset, tuple((k.replace("__", "."), v) for k, v in overrides.items()),
                    control)


# The experiments behind the embedded defaults, three seeds each, paired per seed with the
# control of the same setting (docs/embedded_benchmark.md, "Why the defaults"; notebook 03
# plots them from the reference). The suite trains them after each seed's main rows.
STUDIES: dict[str, tuple[StudyRun, ...]] = {
    # AdaptSegNet's adversarial weight around the default's 0.01 (10x the official 0.001).
    "lambda": (
        _study_run("output_adv_single@lambda0.001", "output_adv_single", method__lambda_adv_main=0.001),
        _study_run("output_adv_single", "output_adv_single"),
        _study_run("output_adv_single@lambda0.03", "output_adv_single", method__lambda_adv_main=0.03),
    ),
    # The label shift: none, the default's 0.3, the generator's full shift; each with its
    # own source-only control.
    "shift": (
        _study_run("source_only@shift0", "source_only", "source_only@shift0", data__balance_shift=0.0),
        _study_run("output_adv_single@shift0", "output_adv_single", "source_only@shift0",
                   data__balance_shift=0.0),
        _study_run("source_only", "source_only"),
        _study_run("output_adv_single", "output_adv_single"),
        _study_run("source_only@shift1", "source_only", "source_only@shift1", data__balance_shift=1.0),
        _study_run("output_adv_single@shift1", "output_adv_single", "source_only@shift1",
                   data__balance_shift=1.0),
    ),
    # Batch norm in the official training mode, paired with AdaBN (the batch-norm row):
    # at the default label shift, and at the full shift (the previous embedded default).
    "bn": (
        _study_run("source_only_tgt_bn", "source_only_tgt_bn", "source_only_tgt_bn"),
        _study_run("output_adv_single@bntrain", "output_adv_single", "source_only_tgt_bn",
                   model__bn_mode="train"),
        _study_run("source_only_tgt_bn@shift1", "source_only_tgt_bn", "source_only_tgt_bn@shift1",
                   data__balance_shift=1.0),
        _study_run("output_adv_single@shift1_bntrain", "output_adv_single",
                   "source_only_tgt_bn@shift1", model__bn_mode="train", data__balance_shift=1.0),
    ),
    # The discriminator's verdicts: the official five stride-2 convolutions (4x2 verdicts at
    # 128x64) against the last two at stride 1 (16x8 patches).
    "patch": (
        _study_run("output_adv_single", "output_adv_single"),
        _study_run("output_adv_single@patch2", "output_adv_single", method__disc_patch_stride1=2),
    ),
}


def run_studies(run_root: str | Path, seed: int, studies: Sequence[str] | None = None,
                pretrained: str = "shipped", adapt_overrides: dict | None = None,
                pretrain_overrides: dict | None = None) -> None:
    """Train the runs of ``studies`` (names of :data:`STUDIES`; all by default) for one seed,
    as variants (:func:`run_variant`) beside the seed's main rows, with the suite's
    ``adapt_overrides`` under each run's own."""
    chosen = list(STUDIES) if studies is None else list(studies)
    unknown = [s for s in chosen if s not in STUDIES]
    if unknown:
        raise config.ConfigError(f"unknown studies {unknown}; known: {sorted(STUDIES)}")
    done: set[str] = set()
    for study in chosen:
        for run in STUDIES[study]:
            if not run.overrides or run.name in done:
                continue  # a main row: run_seed trains it
            done.add(run.name)
            run_variant(run_root, seed, run.preset, run.name,
                        {**(adapt_overrides or {}), **dict(run.overrides)},
                        pretrain_overrides=pretrain_overrides, pretrained=pretrained)


def run_variant(
    run_root: str | Path,
    seed: int,
    preset: str,
    name: str,
    overrides: dict,
    pretrain_overrides: dict | None = None,
    pretrained: str = "shipped",
):
    """Train one embedded preset with ``overrides`` into ``run_root/seed{seed}/{name}``.

    Adaptation presets start from :func:`starting_point`, exactly like the rows of
    :func:`run_seed`, so a variant is paired per seed with the main table's rows (a lambda
    sweep, a longer schedule). Collected tables list variants after the main rows, under
    their folder name.
    """
    if rows.find(name) is not None:
        raise ValueError(f"variant name {name!r} is a main-table row; choose another name")
    root = Path(run_root) / f"seed{seed}"
    init = starting_point(root, seed, pretrained, pretrain_overrides, preset=f"embedded/{preset}")
    cfg = preset_config(preset, seed, overrides, init)
    return train.ensure_run(root / name, cfg, data=registry.build_datasets(cfg.data, cfg.model))


def evaluate_ensemble(
    run_root: str | Path,
    seed: int,
    results: dict,
    data,
    members: Sequence[str] | None = None,
    weights: Sequence[float] = (0.5, 0.5),
    combine: str = "logits",
    max_images: int | None = None,
    device: str = "auto",
    name: str | None = None,
):
    """ADVENT's AdvEnt+MinEnt ensemble: weighted sum of the members' main logits.

    Writes ``run_root/seed{seed}/<name>/metrics.json`` (``name`` defaults to the members
    joined by ``+``: ``advent+minent``) in the run format, so the ensemble appears in
    :func:`segda.runs.collect` tables. The members are predicted the way their runs were
    evaluated (:meth:`segda.evaluate.Predictor.for_runs`: they must agree on it). Returns the
    target :class:`segda.evaluate.EvalResult`.
    """
    members = rows.ensemble().members if members is None else members
    models = [results[name].seg for name in members]
    predictor = evaluate.Predictor.for_runs(
        [results[name].config for name in members], members, device, weights=weights,
        combine=combine)
    res = evaluate.evaluate(models, data.val_target, predictor, max_images=max_images)
    entry = {"iteration": results[members[0]].state.iteration,
             "target_miou": res.miou, "target_iou": [float(x) for x in res.iou]}
    if data.val_source is not None:
        res_src = evaluate.evaluate(models, data.val_source, predictor, max_images=max_images)
        entry.update(source_miou=res_src.miou, source_iou=[float(x) for x in res_src.iou])
    runs.write_metrics(Path(run_root) / f"seed{seed}" / (name or "+".join(members)), {
        "method": "+".join(members), "levels": "multi", "seed": seed, "train_on": "source",
        "iteration": entry["iteration"], "evals": [entry],
        "ensemble": {"members": list(members), "weights": list(weights), "combine": combine},
    })
    return res


# ------------------------------------------------------------------ the shipped checkpoint

SHIP_COMMAND = "python -m segda ship --run-dir runs/shipped/source_pretrain"
FINGERPRINT_ITERATIONS = 5
# Regenerated losses must agree to this relative tolerance: other CPUs' kernels round
# differently, far below it, while a changed recipe, datum or initialisation moves them by more.
FINGERPRINT_RTOL = 1e-3


def first_losses(seed: int = 0, iterations: int = FINGERPRINT_ITERATIONS, data=None) -> list[dict]:
    """The loss terms of the first ``iterations`` of ``embedded/source_pretrain`` (seed
    ``seed``), one entry per iteration: what the shipped checkpoint's training began with, so
    that regenerating them checks the recipe, the data and the code behind the file."""
    cfg = preset_config("source_pretrain", seed, {"run.log_every": 1})
    result = train.fit(cfg, None, data=data, stop_at=iterations, progress_bar="none")
    return result.state.history[:iterations]


def make_shipped(run_dir: str | Path, seed: int = 0, name: str = shipped.EMBEDDED_PRETRAINED,
                 folder: Path = shipped.FOLDER, progress_bar: str | None = None) -> dict:
    """Train ``embedded/source_pretrain`` (seed ``seed``) into ``run_dir`` (reused when
    finished), write its segmenter's weights to ``folder/<name>.pth`` and record them in
    ``folder/manifest.json``: SHA-256, the command, the scores and the first iterations'
    losses. Returns the manifest's record."""
    cfg = preset_config("source_pretrain", seed)
    data = registry.build_datasets(cfg.data, cfg.model)
    result = train.ensure_run(run_dir, cfg, data=data, progress_bar=progress_bar)
    path = io.save_atomic(result.seg.state_dict(), Path(folder) / f"{name}.pth")
    final = result.final_eval or {}
    record = {
        "file": path.name, "sha256": io.sha256(path), "command": SHIP_COMMAND,
        "preset": "embedded/source_pretrain", "seed": seed, "iterations": result.state.iteration,
        "model": cfg.model.name, "image_size": list(cfg.data.source_size),
        "target_miou": final.get("target_miou"), "source_miou": final.get("source_miou"),
        "torch": torch.__version__, "first_losses": first_losses(seed, data=data),
    }
    manifest = shipped.read_manifest(Path(folder) / "manifest.json")
    manifest[name] = record
    io.write_text_atomic(Path(folder) / "manifest.json",
                                    json.dumps(manifest, indent=2) + "\n")
    return record


def rescore_shipped(name: str = shipped.EMBEDDED_PRETRAINED, folder: Path = shipped.FOLDER) -> dict:
    """Re-evaluate the shipped checkpoint, unchanged, on the validation splits its preset
    renders now (a changed target domain changes its target score, not its weights: the
    source side and the training are the same) and record the scores in the manifest."""
    record = shipped.entry(name)
    cfg = preset_config("source_pretrain", record["seed"])
    data = registry.build_datasets(cfg.data, cfg.model)
    seg = _shipped_segmenter(cfg, name)
    predictor = evaluate.Predictor.from_config(cfg)
    record = {**record,
              "target_miou": evaluate.evaluate(seg, data.val_target, predictor).miou,
              "source_miou": evaluate.evaluate(seg, data.val_source, predictor).miou,
              "balance_shift": cfg.data.balance_shift}
    manifest = shipped.read_manifest(Path(folder) / "manifest.json")
    manifest[name] = record
    io.write_text_atomic(Path(folder) / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return record


def _shipped_segmenter(cfg: TrainConfig, name: str):
    from segda import checkpointing, models

    seg = models.build_segmenter(cfg.model.name, cfg.model.num_classes, cfg.model.multi_level,
                                 cfg.model.aspp_branches)
    checkpointing.load_segmenter_weights(seg, shipped.reference(name))
    return seg.eval()



def first_losses_drift(record: dict) -> float:
    """The largest relative difference between a shipped checkpoint's recorded first losses
    (its manifest ``record``) and the same iterations regenerated now; below
    :data:`FINGERPRINT_RTOL` the recipe still makes the same checkpoint."""
    again = first_losses(record["seed"], len(record["first_losses"]))
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12)
               for a, b in zip(again, record["first_losses"], strict=True) for k in b)


def variant_preset(preset: str, name: str) -> str:
    """The embedded preset a variant named ``name`` trains (``preset``: with or without its
    ``embedded/`` folder), checked before any run: an embedded preset, and a folder name that
    is not a main row's."""
    folder, _, bare = preset.rpartition("/")
    if folder not in ("", "embedded"):
        raise config.ConfigError(f"variant trains embedded presets, not {preset}; train it with: "
                                 f"python -m segda train {preset} --run-dir DIR --set ...")
    config.preset_path(f"embedded/{bare}")  # an unknown preset: the list, before any run
    if rows.find(name) is not None:
        raise config.ConfigError(f"--name {name} is a row of the main table; a variant needs "
                                 f"its own folder name, e.g. --name {name}_long")
    return bare


def run_suite(run_root: str | Path, seeds: Sequence[int], studies: Sequence[str] | None = None,
              pretrained: str = "shipped", pretrain_overrides: dict | None = None,
              adapt_overrides: dict | None = None) -> None:
    """The embedded benchmark over ``seeds``: each seed's rows (:func:`run_seed`), then the
    ``studies`` behind the defaults (None: every study; ``[]``: none)."""
    for seed in seeds:
        run_seed(run_root, seed, pretrain_overrides=pretrain_overrides,
                 adapt_overrides=adapt_overrides, pretrained=pretrained)
        if studies != []:
            run_studies(run_root, seed, studies, pretrained=pretrained,
                        adapt_overrides=adapt_overrides, pretrain_overrides=pretrain_overrides)


def ensemble_of_runs(run_root: str | Path, seed: int, members: Sequence[str],
                     weights: Sequence[float] | None = None, name: str | None = None):
    """The ensemble of one seed's finished runs ``members`` (folders under
    ``run_root/seed{seed}``; ``weights``: equal when None), evaluated and written as a run
    (:func:`evaluate_ensemble`); returns the target result."""
    root = Path(run_root) / f"seed{seed}"
    results = {m: train.load_run(root / m) for m in members}
    cfg = results[members[0]].config
    return evaluate_ensemble(run_root, seed, results, registry.build_datasets(cfg.data, cfg.model),
                             members=members, weights=weights or [1 / len(members)] * len(members),
                             name=name)
