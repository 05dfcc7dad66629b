"""The embedded-benchmark experiment: every method over seeds, warm-started like ADVENT.

Protocol (a warm start as ADVENT starts from pretrained weights; values from a prototype study):

1. ``embedded/source_pretrain``: the small segmenter trained on source from scratch; by
   default the checkpoint the package ships (seed 0, :func:`segda.shipping.make_shipped`), or
   each seed's own (where a row starts is :mod:`segda.starts`, which the notebooks share);
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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segda import config, decomposition, evaluate, rows, runs, starts, train
from segda.data import registry


def starting_point(root: Path, seed: int, pretrained: str = "shipped",
                   pretrain_overrides: dict | None = None, data=None,
                   preset: str = "embedded/source_only") -> str | Path | None:
    """The checkpoint ``preset``'s row of a seed starts from (:func:`segda.starts.starts_from`):
    the shipped one, or the seed's own ``source_pretrain`` run in ``root`` (trained first when
    missing); ``None`` for a row that starts from its preset's own initialisation."""

    def own() -> Path:
        pre_cfg = starts.run_config("embedded/source_pretrain", seed, pretrain_overrides)
        pre_data = data if data is not None else registry.build_datasets(pre_cfg.data, pre_cfg.model)
        return starts.warm_start(root / "source_pretrain", pre_cfg, pre_data)

    return starts.start_checkpoint(preset, pretrained, own)


def run_seed(
    run_root: str | Path,
    seed: int,
    presets: Sequence[str] | None = None,
    pretrain_overrides: dict | None = None,
    adapt_overrides: dict | None = None,
    oracle: bool = True,
    ensemble: bool = True,
    pretrained: str = "shipped",
    posthoc: bool = True,
) -> Path:
    """Train (or reuse) every run of one seed under ``run_root/seed{seed}``, adaptation rows
    (``presets``; by default the suite's, :func:`segda.rows.adaptation`) starting from
    :func:`starting_point`; then, with ``posthoc``, the statistics rows of
    :mod:`segda.decomposition` (AdaBN of the control and of every row's final model)."""
    presets = rows.adaptation() if presets is None else presets
    root = Path(run_root) / f"seed{seed}"
    pre_cfg = starts.run_config("embedded/source_pretrain", seed, pretrain_overrides)
    data = registry.build_datasets(pre_cfg.data, pre_cfg.model)
    init = starting_point(root, seed, pretrained, pretrain_overrides, data)
    if oracle:
        ora_cfg = starts.run_config("embedded/oracle", seed, pretrain_overrides)
        train.ensure_run(root / "oracle", ora_cfg, data=registry.build_datasets(ora_cfg.data))
    results = {}
    for preset in presets:
        cfg = starts.run_config(f"embedded/{preset}", seed, adapt_overrides, init)
        results[preset] = train.ensure_run(root / preset, cfg, data=data)
    if ensemble and all(name in results for name in rows.ensemble().members):
        evaluate_ensemble(Path(run_root), seed, results, data)  # on the members' images
    if posthoc:
        decomposition.apply_posthoc(run_root, seed, results, data)
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
    # Multi-level's auxiliary adversarial term switched off (the auxiliary discriminator still
    # trains; its term never reaches the segmenter): is the auxiliary term what separates
    # multi-level from single-level?
    "aux": (
        _study_run("output_adv_single", "output_adv_single"),
        _study_run("output_adv_multi", "output_adv_multi"),
        _study_run("output_adv_multi@aux0", "output_adv_multi", method__lambda_adv_aux=0.0),
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
    runs.check_name(name, "name")
    runs.check_run_dir(run_root, "--run-root")
    if rows.find(name) is not None:
        raise config.ConfigError(f"variant name {name!r} is a main-table row; choose another name")
    root = Path(run_root) / f"seed{seed}"
    init = starting_point(root, seed, pretrained, pretrain_overrides, preset=f"embedded/{preset}")
    cfg = starts.run_config(f"embedded/{preset}", seed, overrides, init)
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
    :func:`segda.runs.collect` tables; a folder holding a trained run is refused
    (:func:`ensemble_folder`; :func:`ensemble_of_runs` also refuses a member's or a trained
    row's name). The members are predicted the
    way their runs were evaluated (:meth:`segda.evaluate.Predictor.for_runs`: they must agree
    on it) and scored on the images their runs were scored on (``run.eval_max_images``), so
    the ensemble's row is comparable to theirs (``max_images``, when given, must be that
    number). Returns the target :class:`segda.evaluate.EvalResult`.
    """
    members = rows.ensemble().members if members is None else members
    folder = ensemble_folder(run_root, seed, members, name)
    counts = {results[m].config.run.eval_max_images for m in members}
    if len(counts) > 1:
        raise config.ConfigError(
            f"the members {list(members)} were scored on different numbers of validation images "
            f"(run.eval_max_images {sorted(counts)}); an ensemble's row is scored on its "
            "members' images: retrain them with one run.eval_max_images")
    scored = counts.pop() or None  # 0: every image
    if max_images is not None and max_images != scored:
        raise evaluate.EvaluationError(
            f"max_images={max_images}, but the members were scored on "
            f"{scored or 'every'} validation image(s) (run.eval_max_images): every row of a "
            f"table is scored on the same images, so pass max_images={scored} (or None)")
    max_images = scored
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
    runs.write_metrics(folder, {
        "method": "+".join(members), "levels": "multi", "seed": seed, "train_on": "source",
        "iteration": entry["iteration"], "evals": [entry],
        "ensemble": {"members": list(members), "weights": list(weights), "combine": combine},
        "eval_images": max_images or 0,  # 0: every image, as run.eval_max_images says it
    })
    return res


def ensemble_folder(run_root: str | Path, seed: int, members: Sequence[str],
                    name: str | None = None) -> Path:
    """The folder an ensemble's ``metrics.json`` goes to, checked before anything is
    evaluated: ``name`` (default: the members joined by ``+``) is one plain folder name and
    not a folder that holds a trained run (an earlier ensemble's result is rewritten)."""
    name = runs.check_name(name, "--name") if name is not None else "+".join(members)
    folder = Path(run_root) / f"seed{seed}" / name
    metrics = runs.read_metrics(folder) if (folder / runs.METRICS).exists() else {}
    if (folder / runs.CONFIG).exists() or (folder / runs.CHECKPOINT).exists() or (
            metrics and "ensemble" not in metrics):
        raise config.ConfigError(
            f"{folder} holds a trained run; the ensemble's result would overwrite its "
            f"metrics.json: give the ensemble another --name (e.g. --name {'+'.join(members)})")
    return folder


def variant_preset(preset: str, name: str) -> str:
    """The embedded preset a variant named ``name`` trains (``preset``: with or without its
    ``embedded/`` folder), checked before any run: an embedded preset, and a folder name that
    is not a main row's."""
    runs.check_name(name, "--name")
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
    ``studies`` behind the defaults (None: every study; ``[]``: none). Every argument is
    checked before the first run trains."""
    runs.check_run_dir(run_root, "--run-root")
    unknown = [s for s in studies or [] if s not in STUDIES]
    if unknown:
        raise config.ConfigError(f"--studies {unknown[0]} is not a study; the studies are "
                                 f"{', '.join(STUDIES)} (omit --studies for all of them)")
    for seed in seeds:  # the seeds and each row's overrides, before any training
        train.check_settings(starts.run_config("embedded/source_pretrain", seed,
                                               pretrain_overrides))
        for preset in rows.adaptation():
            train.check_settings(starts.run_config(f"embedded/{preset}", seed, adapt_overrides))
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
    root = runs.check_run_dir(run_root, "--run-root") / f"seed{seed}"
    if len(set(members)) != len(members):
        raise config.ConfigError(f"--members {' '.join(members)} names a run twice; give each "
                                 "member once (--weights sets its share)")
    row = rows.find(name) if name else None
    if name in members or (row is not None and not row.members):  # its folder is the member's
        raise config.ConfigError(
            f"--name {name} is {'a member' if name in members else 'a trained row'} of the "
            f"table; the ensemble needs its own folder name, e.g. --name {'+'.join(members)}")
    ensemble_folder(run_root, seed, members, name)  # before the members are loaded
    results = {m: train.load_run(root / m) for m in members}
    cfg = results[members[0]].config
    return evaluate_ensemble(run_root, seed, results, registry.build_datasets(cfg.data, cfg.model),
                             members=members, weights=weights or [1 / len(members)] * len(members),
                             name=name)


def statistics_rows(run_root: str | Path, seed: int, data=None) -> dict[str, float]:
    """The statistics rows (:func:`segda.decomposition.apply_posthoc`) of the suite's rows
    already finished in ``run_root/seed<seed>`` (read from their ``last.pth``): what ``make
    demo``'s notebooks and a suite that was stopped early get afterwards. ``data`` defaults to the
    datasets of the control's config. Returns the target mIoU of each derived row."""
    seed_dir = Path(run_root) / f"seed{seed}"
    found = [name for name in rows.adaptation() if (seed_dir / name / runs.METRICS).exists()]
    if rows.control() not in found:
        raise runs.RunFileError(f"{seed_dir} holds no finished control run ({rows.control()}); "
                                "train the seed's rows first (python -m segda suite)")
    results = {name: train.load_run(seed_dir / name) for name in found}
    if data is None:
        cfg = results[rows.control()].config
        data = registry.build_datasets(cfg.data, cfg.model)
    return decomposition.apply_posthoc(run_root, seed, results, data, found)
