"""What batch-norm statistics give for free, and what a loss adds beyond them.

AdaBN (Li et al., "Revisiting Batch Normalization For Practical Domain Adaptation", ICLR-W 2017)
re-estimates every batch-norm layer's statistics on target images and changes no weight. Applied
to the control it is the ``adabn`` row: the gain a method gets without any loss. Applied to a
method's final model it is ``<row>+adabn``: whether the loss kept what statistics give and added
to it. Users of the official code measured this share on GTA5 -> Cityscapes (AdaptSegNet issue
#25: about 41 mIoU with the adversarial weights at 0, training-mode batch norm forwarding target
images), so a method's gain is read against both statistics rows, ``adabn`` and
``source_only_tgt_bn`` (training-mode batch norm, target forwards, no target loss).

Each derived row is written as a run folder of its own beside the trained ones
(``seed<k>/adabn/metrics.json``, ``seed<k>/advent+adabn/metrics.json``), so
:func:`segda.runs.collect` and every results table read it like any row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segda import adabn, evaluate, rows, runs

ADABN_IMAGES = adabn.STATISTICS_IMAGES
SUFFIX = "+adabn"


def derived_name(row: str) -> str:
    """The folder of ``row``'s final model with post-hoc AdaBN: ``adabn`` for the control,
    ``<row>+adabn`` for any other row."""
    return rows.ADABN if row == rows.control() else f"{row}{SUFFIX}"


def _adapted(result, data, images: int):
    return adabn.adapt_batch_norm(result.seg, data.train_target, max_images=images)


def score(models, configs, names, data, max_images):
    """Target (and, where the data has one, source) mIoU and IoU of one model or an ensemble."""
    predictor = (evaluate.Predictor.from_config(configs[0]) if len(models) == 1
                 else evaluate.Predictor.for_runs(configs, names, "auto", weights=(0.5, 0.5),
                                                  combine="logits"))
    models = models[0] if len(models) == 1 else models
    res = evaluate.evaluate(models, data.val_target, predictor, max_images=max_images)
    entry = {"target_miou": res.miou, "target_iou": [float(x) for x in res.iou]}
    if data.val_source is not None:
        src = evaluate.evaluate(models, data.val_source, predictor, max_images=max_images)
        entry.update(source_miou=src.miou, source_iou=[float(x) for x in src.iou])
    return entry


def _binding(member_runs, members, images: int, max_images) -> dict:
    """What a derived row was computed from: its members' configs and final iterations, the
    number of target images of the statistics and of the scoring. A stored row is reused only
    when all of it is equal (the same rule as a finished run's ``config_hash``)."""
    return {"of_config_hashes": [runs.config_hash(r.config) for r in member_runs],
            "of_iterations": [int(r.state.iteration) for r in member_runs],
            "images": images, "max_images": max_images, "members": list(members)}


def _stored(folder: Path, binding: dict) -> dict | None:
    if not (folder / runs.METRICS).exists():
        return None
    metrics = runs.read_metrics(folder)
    stored = metrics.get("adabn", {})
    if any(stored.get(key) != value for key, value in binding.items()):
        return None
    return metrics["evals"][-1]


def apply_posthoc(run_root: str | Path, seed: int, results: dict, data,
                  names: Sequence[str] | None = None, images: int = ADABN_IMAGES) -> dict[str, float]:
    """Post-hoc AdaBN of every trained row of one seed (``results``: row -> the run's
    :class:`segda.train.RunResult`) and of the ensemble when both members are there; each is
    scored on the images its row was scored on (``run.eval_max_images``) and written to
    ``run_root/seed<seed>/<derived_name(row)>``. A derived row already written from the same
    runs (same configs, same final iterations, same numbers of images) is read, not recomputed.
    Returns the target mIoU of each derived row."""
    names = list(results) if names is None else list(names)
    seed_dir = Path(run_root) / f"seed{seed}"
    scored: dict[str, float] = {}
    groups = [(name, (name,)) for name in names]
    ensemble = rows.ensemble()
    if all(m in names for m in ensemble.members):
        groups.append((ensemble.key, ensemble.members))
    adapted: dict = {}
    for row, members in groups:
        entry = posthoc_entry(seed_dir, row, [results[m] for m in members], list(members), data,
                              images, adapted)
        scored[derived_name(row)] = 100 * entry["target_miou"]
    return scored


def posthoc_entry(seed_dir: str | Path | None, row: str, members: Sequence, names: Sequence[str], data,
                  images: int = ADABN_IMAGES, adapted: dict | None = None) -> dict:
    """The evaluation entry of one derived row (``target_miou``, ``target_iou`` and, where the
    data has a source validation split, the source's): read from
    ``seed_dir/<derived_name(row)>`` when it was written from the same runs, else computed
    (post-hoc AdaBN of each member, scored on the images the row was scored on) and written
    there (``seed_dir=None``: computed, not written). ``members``: the rows'
    :class:`segda.train.RunResult`, one (a row) or two (the ensemble); ``adapted``: a cache
    of adapted models by name, shared between calls."""
    configs = [m.config for m in members]
    max_images = configs[0].run.eval_max_images or None
    binding = _binding(members, names, images, max_images)
    folder = None if seed_dir is None else Path(seed_dir) / derived_name(row)
    entry = None if folder is None else _stored(folder, binding)
    if entry is not None:
        return entry
    adapted = {} if adapted is None else adapted
    for name, member in zip(names, members):
        if name not in adapted:
            adapted[name] = _adapted(member, data, images)
    entry = score([adapted[n] for n in names], configs, list(names), data, max_images)
    entry["iteration"] = members[0].state.iteration
    if folder is None:
        return entry
    runs.write_metrics(folder, {
        "method": derived_name(row), "levels": configs[0].method.levels,
        "seed": configs[0].run.seed, "train_on": "source", "iteration": entry["iteration"],
        "evals": [entry], "adabn": {"of": row, **binding},
        "eval_images": configs[0].run.eval_max_images,  # a table says on how many
    })
    return entry
