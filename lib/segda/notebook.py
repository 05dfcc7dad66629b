"""What the teaching notebooks call: a config from papermill's parameters, runs trained or
reused, and a comparison table of the rows a notebook trained.

Notebook parameters are literals (papermill injects overrides after the parameters cell and
does not recompute derived values), so the derivation lives here, in one place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segda import checkout, config, curves, repro, results, rows, runs, shipped, starts, train
from segda.data import registry


def run_root(run_dir: str | Path) -> Path:
    """The folder a notebook's ``run_dir`` parameter names, wherever the kernel started.

    A relative ``run_dir`` (the parameters cells' ``"../runs/notebooks"``) is relative to
    ``notebooks/``, as in JupyterLab: ``<repo>/runs/notebooks`` also under papermill started
    from the repository root, whose kernel works in the repository root. An absolute path
    (``make demo``, sweeps) is kept; outside a source checkout (no ``notebooks/`` folder,
    :data:`segda.checkout.NOTEBOOKS_DIR`) a relative path stays relative to the working folder.
    """
    path = runs.check_run_dir(run_dir, "parameter 'run_dir'").expanduser()
    if path.is_absolute() or not checkout.NOTEBOOKS_DIR.is_dir():
        return path
    return Path(os.path.normpath(checkout.NOTEBOOKS_DIR / path))


def notebook_config(
    preset: str,
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    model: str | None = None,
    max_iters: int | None = None,
    batch_size: int | None = None,
    image_size: Sequence[int] | None = None,
    device: str = "auto",
    seed: int = 0,
    amp: bool = False,
    progress: bool = False,
    eval_images: int | None = None,
    extra: dict | None = None,
) -> config.TrainConfig:
    """A config from the notebooks' papermill parameters (literals) on top of a preset, built
    as the experiment suite builds its runs' (:func:`segda.starts.run_config`).

    ``max_iters`` is the number of iterations to run. Presets whose poly schedule ends where
    the run ends (the embedded ones) get both ``optim.max_iters`` and ``optim.early_stop``;
    the paper presets keep their 250k-iteration schedule horizon and only stop earlier,
    as the official code does. ``eval_images``: validation images per evaluation, at least 1
    (None: the whole split), as the evaluation functions take it. ``image_size`` is ``[W, H]``
    for both domains; ``None`` keeps the preset's sizes (1280x720 / 1024x512 for the paper
    rows); the text ``"[128, 64]"`` (what papermill's ``-p`` passes) is read as YAML.
    """
    for name, value in (("max_iters", max_iters), ("batch_size", batch_size),
                        ("eval_images", eval_images), ("seed", seed)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise config.ConfigError(f"parameter {name!r} must be a whole number (or None), got "
                                     f"{value!r}; pass it with papermill -p {name} 200")
    if eval_images is not None and eval_images < 1:  # as every evaluation function refuses it
        raise config.ConfigError(f"parameter 'eval_images' must be at least 1 (None: the whole "
                                 f"split), got {eval_images}")
    image_size = notebook_parameter("image_size", image_size, list)
    extra = notebook_parameter("overrides", extra, dict)
    repro.check_device(device, key="device")  # the notebook parameter, before any run folder
    base = config.load(preset)
    over: dict = {"run.device": device, "run.amp": amp, "run.progress": progress}
    optional = {  # parameter value -> the config keys it sets; None keeps the preset's
        "data.dataset": dataset, "data.root": data_root, "model.name": model,
        "optim.early_stop": max_iters, "data.batch_size": batch_size,
        "run.eval_max_images": eval_images,
        "data.source_size": None if image_size is None else list(image_size),
        "data.target_size": None if image_size is None else list(image_size),
    }
    over.update({k: v for k, v in optional.items() if v is not None})
    if max_iters is not None and base.optim.max_iters == base.optim.early_stop:
        over["optim.max_iters"] = max_iters
    over.update(extra or {})
    return starts.run_config(preset, seed, over)


def notebook_parameter(name: str, value, kind: type):
    """A list or dict notebook parameter as given: papermill's ``-p`` passes text
    (``-p image_size "[128, 64]"``, ``-p overrides '{"method.lambda_adv_main": 0.5}'``), which is
    read as JSON / YAML; ``-y`` passes the value itself."""
    if isinstance(value, str):
        try:
            value = config.parse_yaml(value)
        except config.ConfigError as err:
            raise config.ConfigError(f"parameter {name!r}: {err}; pass it with papermill -y "
                                     f"'{name}: ...' instead of -p") from None
    if value is not None and not isinstance(value, (list, tuple) if kind is list else kind):
        raise config.ConfigError(f"parameter {name!r} must be a {kind.__name__}, got {value!r}; "
                                 f"pass it with papermill -y '{name}: ...'")
    return value


def run_folder(run_dir: str | Path, preset: str, seed: int,
               cfg: config.TrainConfig | None = None) -> Path:
    """Where a notebook's run of ``preset`` lives: ``<run_dir>/seed<k>/<preset name>``, or, when
    that folder already holds a run of another configuration (the learner changed a parameter),
    a sibling named by ``cfg``'s hash (``advent-1a2b3c4d``). So a changed parameter trains a new
    run, and changing it back finds the old one again. A relative ``run_dir`` is resolved by
    :func:`run_root`."""
    plain = run_root(run_dir) / f"seed{seed}" / preset.split("/")[-1]
    held = None if cfg is None else runs.read_config(plain)
    if held is None or held == cfg:
        return plain
    return plain.with_name(f"{plain.name}-{runs.config_hash(cfg)}")


def train_preset(
    preset: str,
    run_dir: str | Path,
    *,
    pretrained: str = "shipped",
    pretrain_iters: int | None = None,
    data=None,
    progress_bar: str | None = None,
    curve_every: int | None = None,
    curve_images: int = 100,
    reuse_only: bool = False,
    wait: bool = True,
    **params,
):
    """Train (or reuse from ``run_dir``) one preset as a notebook asks for it.

    Embedded adaptation presets warm-start from a source-only checkpoint: with
    ``pretrained="shipped"`` the one the package ships (``embedded/source_pretrain``, seed 0,
    500 iterations; SHA-256-checked, :mod:`segda.shipped`), with ``pretrained="train"`` the
    seed's own ``embedded/source_pretrain`` run of ``pretrain_iters`` iterations, trained
    first when missing. Either way every notebook's rows of a seed start from one model.
    Presets trained from scratch (the oracle) run ``pretrain_iters`` iterations; with
    ``pretrained="shipped"`` a row whose finished run ships with the package at exactly this
    config (the oracle at the notebooks' defaults, :func:`segda.starts.install_shipped_run`)
    is copied instead of trained, and says so.
    ``progress_bar``: how training shows its progress (:func:`segda.train.fit`); notebooks pass
    ``"notebook"`` in JupyterLab and ``"text"`` under papermill. ``curve_every``: train in
    chunks of that many iterations and score the model on ``curve_images`` target validation
    images after each (:mod:`segda.curves`; the run is the same, bit for bit);
    :func:`target_curve` reads the curve. ``reuse_only``: train nothing (not even the
    pretraining); ``None`` when ``run_dir`` holds no finished run of this config
    (:func:`reuse_rows`). ``wait``: when another process is training the row, wait for it
    and reuse it (:func:`when_free`); ``False`` raises :class:`segda.runs.RunLockedError`
    at once instead (:func:`train_rows` trains its other rows meanwhile).
    """
    seed = params.get("seed", 0)
    extra = dict(notebook_parameter("overrides", params.pop("extra", None), dict) or {})

    def own() -> Path:
        pre_cfg = notebook_config("embedded/source_pretrain",
                                  **{**params, "max_iters": pretrain_iters, "extra": dict(extra)})
        pre_dir = run_folder(run_dir, "embedded/source_pretrain", seed, pre_cfg)
        if reuse_only and not runs.is_complete(pre_dir, pre_cfg):
            raise _NotTrained  # without its pretraining the row cannot have been trained
        def pretrained_here() -> Path:
            return starts.warm_start(pre_dir, pre_cfg, data, progress_bar)

        return when_free(pre_dir, pretrained_here) if wait else pretrained_here()

    try:
        init = starts.start_checkpoint(preset, pretrained, own, params.get("model"))
    except _NotTrained:
        return None
    if init is not None:
        extra["model.init_checkpoint"] = str(init)
    elif preset.startswith("embedded/"):
        params = {**params, "max_iters": pretrain_iters or params.get("max_iters")}
    cfg = notebook_config(preset, extra=extra, **params)
    if data is not None and cfg.data.train_on != "source":
        data = None  # an oracle trains on labelled target images: its own datasets
    folder = run_folder(run_dir, preset, seed, cfg)
    if reuse_only and not runs.is_complete(folder, cfg):
        return None
    if curve_every and data is None:
        data = registry.build_datasets(cfg.data, cfg.model)

    def trained():
        if init is None and pretrained == "shipped":
            name = starts.install_shipped_run(preset, folder, cfg)
            if name is not None:
                record = shipped.entry(name)
                print(f"{folder.parent.name}/{folder.name}: the finished run shipped with "
                      f"segda ({name}: seed {record['seed']}, {record['iterations']} "
                      "iterations, SHA-256-checked) copied into the run folder, not trained "
                      "here; pretrained=\"train\" trains it here", flush=True)
        if curve_every:
            return curves.train_with_curve(folder, cfg, data, curve_every, curve_images,
                                           progress_bar)[0]
        return train.ensure_run(folder, cfg, data=data, progress_bar=progress_bar)

    return when_free(folder, trained) if wait else trained()


def when_free(folder: Path, trained, poll_s: float = 2.0):
    """``trained()`` once no other process trains into ``folder``: two notebooks of one
    ``run_dir`` (two kernels, or the test suite's parallel workers) share their rows, so a
    notebook that finds a row being trained waits for it, says so once, and then reuses it."""
    import time

    said = False
    while True:
        try:
            return trained()
        except runs.RunLockedError as err:
            if not said:
                print(f"waiting: {err}; this notebook reuses the run once it is finished",
                      flush=True)
                said = True
            time.sleep(poll_s)


class _NotTrained(Exception):
    """A run :func:`reuse_rows` looks for is not in the runs' folder."""


def reuse_rows(presets: Sequence[str], run_dir: str | Path, **kwargs) -> dict:
    """``{row key: RunResult}`` of the presets whose finished run ``run_dir`` already holds,
    found as :func:`train_rows` finds it (same parameters, same folder); nothing is trained,
    and a row without its run is left out. A notebook reads another notebook's runs with it
    (a curve, step diagnostics) without paying for them when they are missing."""
    found = {}
    for p in presets:
        result = train_preset(p, run_dir, reuse_only=True, **kwargs)
        if result is not None:
            found[row_key(p)] = result
    return found


def target_curve(result):
    """The target curve (:mod:`segda.curves`) stored beside a run, or ``None`` when the run
    was trained without one (reused from an earlier run, or ``curve_every`` not set)."""
    return curves.read(result.run_dir)


def sibling(preset: str, row: str) -> str:
    """The preset of the row ``row`` (a key of :data:`segda.rows.ROWS`) in the family of
    ``preset``, so a notebook run at paper scale compares against paper-scale runs:
    ``sibling("paper/advent", "minent")`` is ``"paper/minent"`` and
    ``sibling("paper/advent", "output_adv_single")`` is ``"paper/adaptsegnet_single"``
    (:func:`segda.rows.preset_of`)."""
    return rows.preset_of(row, preset.split("/")[0] if "/" in preset else "embedded")


def row_key(preset: str) -> str:
    """The row a preset trains (:func:`segda.rows.key_of_preset`): ``"advent"`` for
    ``embedded/advent`` and ``paper/advent``, ``"output_adv_single"`` for
    ``paper/adaptsegnet_single``."""
    return rows.key_of_preset(preset)


def train_rows(presets: Sequence[str], run_dir: str | Path, curve: Sequence[str] = (),
               curve_every: int = 50, **kwargs) -> dict:
    """``{row key: RunResult}`` for several presets (trained or reused), keyed by
    :func:`row_key` so that a notebook reads ``runs["output_adv_single"]`` at either scale.
    The presets in ``curve`` are trained with a target curve every ``curve_every`` iterations
    (:func:`train_preset`).

    A row that another process is training (another notebook of the same ``run_dir``, or the
    test suite's other notebook group) is left for last: the other rows train meanwhile, then
    this notebook waits for it and reuses it, so no core idles on a row it would only wait
    for. The result keeps the order of ``presets``."""
    def one(preset: str, wait: bool):
        return train_preset(preset, run_dir, curve_every=curve_every if preset in curve else None,
                            wait=wait, **kwargs)

    results, busy = {}, []
    for preset in presets:
        try:
            results[preset] = one(preset, wait=False)
        except runs.RunLockedError:
            busy.append(preset)
    for preset in busy:
        results[preset] = one(preset, wait=True)
    return {row_key(p): results[p] for p in presets}


def compare(results: dict, data=None):
    """Target and source mIoU (%) of trained runs (their final evaluation), with gains against
    source-only (the control) and against the two rows that take what batch-norm statistics give
    for free: AdaBN (the control's statistics re-estimated on target training images, no
    training; computed here when ``data`` is given, as :mod:`segda.decomposition` does) and training-mode
    batch norm forwarding target images with no target loss (``source_only_tgt_bn``, when among
    ``results``)."""
    import pandas as pd

    from segda import decomposition
    from segda.results import GAIN_COLUMNS

    table = {}
    control = rows.control()
    for name, res in results.items():
        final = res.final_eval or {}
        table[rows.label(name)] = {
            "target mIoU": 100 * final.get("target_miou", np.nan),
            "source mIoU": 100 * final.get("source_miou", np.nan),
        }
        if name == control and data is not None:
            # stored beside the control's run folder, so the next notebook reads it
            seed_dir = None if res.run_dir is None else Path(res.run_dir).parent
            scored = decomposition.posthoc_entry(seed_dir, name, [res], [name], data)
            table[rows.label(rows.ADABN)] = {
                "target mIoU": 100 * scored["target_miou"],
                "source mIoU": 100 * scored.get("source_miou", np.nan),
            }
    df = pd.DataFrame.from_dict(table, orient="index")
    for key, col in GAIN_COLUMNS:
        if rows.label(key) in df.index:
            df[col] = df["target mIoU"] - df.loc[rows.label(key), "target mIoU"]
    return df.round(2)


def beside_reference(trained: dict, extra: dict | None = None, reference=None):
    """A notebook's runs beside the committed three-seed reference
    (:func:`segda.results.against_reference`): this run's target mIoU and gain over the
    batch-norm control, the reference's mean, std and range over seeds, and the verdicts.

    Args:
        trained: ``{row key: RunResult}`` as :func:`train_rows` returns it; it must hold the
            control (``source_only``).
        extra: more rows as ``{row key: target mIoU (%)}`` (the ensemble).
        reference: the reference table; :func:`segda.results.read_reference` by default.

    Prints a note when the runs were trained at other settings than the reference's (other
    iterations or starting point): the comparison then shows the scale, not a reproduction.
    """
    ref = results.read_reference() if reference is None else reference
    own = {k: 100 * r.final_eval["target_miou"] for k, r in trained.items() if r.final_eval}
    own.update(extra or {})
    notes = []
    for key, run in trained.items():
        seeds = ref[ref["key"] == key]
        if seeds.empty:
            continue
        if int(run.state.iteration) != int(seeds["iterations"].iloc[0]):
            notes.append(f"{key}: {run.state.iteration} iterations, reference "
                         f"{int(seeds['iterations'].iloc[0])}")
        start = runs.start_of(run.config)
        if rows.warm_started(rows.preset_of(key)) and start != seeds["start"].fillna("").iloc[0]:
            notes.append(f"{key}: starts from {start or 'scratch'!r}, reference from "
                         f"{seeds['start'].iloc[0]!r}")
    if notes:
        print("Note: these runs differ from the reference's settings (" + "; ".join(notes[:3])
              + ("; ..." if len(notes) > 3 else "") + "): the comparison shows the scale of the "
              "effects, it does not reproduce them.")
    control = rows.control()
    order = [control] + [k for k in own if k != control]
    return results.against_reference({k: own[k] for k in order if k in own}, ref)


def update_inputs(cfg: config.TrainConfig, data):
    """What a notebook's written-out update runs on: the first ``batch_size`` training images
    of each domain (source with labels) and two identical copies of freshly built models
    (seeded with ``run.seed``), one for the written-out update and one for
    :func:`segda.step.train_step`. Returns ``(source batch, target batch, state, reference)``."""
    import torch

    from segda import methods, step

    device = repro.resolve_device(cfg.run.device)
    n = cfg.data.batch_size
    items_s = [data.train_source[i] for i in range(n)]
    items_t = [data.train_target[i] for i in range(n)]
    src = methods.Batch(torch.stack([x["image"] for x in items_s]).to(device),
                        torch.stack([x["label"] for x in items_s]).to(device))
    tgt = methods.Batch(torch.stack([x["image"] for x in items_t]).to(device))
    copies = []
    for _ in range(2):
        torch.manual_seed(cfg.run.seed)
        copies.append(step.build_state(cfg, device))
    return src, tgt, copies[0], copies[1]


def differing_tensors(state, reference) -> list[str]:
    """The names of the tensors (parameters and buffers) in which two training states differ,
    segmenter first, then each discriminator (``disc.<level>.<name>``); a discriminator that
    only one of them has counts as differing whole."""
    import torch

    pairs = [("", state.seg, reference.seg),
             *((f"disc.{k}.", state.discs[k], reference.discs[k])
               for k in sorted(set(state.discs) & set(reference.discs)))]
    out = [f"disc.{k}" for k in sorted(set(state.discs) ^ set(reference.discs))]
    for prefix, x, y in pairs:
        theirs = y.state_dict()
        out += [prefix + name for name, a in x.state_dict().items()
                if name not in theirs or not torch.equal(a, theirs[name])]
    return out


def same_weights(state, reference) -> bool:
    """``True`` when two training states hold bitwise equal segmenters and discriminators (a
    notebook's written-out update against :func:`segda.step.train_step`). A preset of another
    method never reaches this check: :func:`setup` stops it first."""
    return not differing_tensors(state, reference)


class UpdateMismatch(AssertionError):
    """A notebook's written-out update left other weights than :func:`segda.step.train_step`."""


def verify_update(state, reference) -> bool:
    """The method notebooks' check of their written-out update: ``True`` when it left the same
    weights as :func:`segda.step.train_step`, bit for bit; otherwise :class:`UpdateMismatch`
    naming the tensors that differ, so that the execution stops there (papermill, nbval)
    instead of printing ``False`` and going on."""
    differing = differing_tensors(state, reference)
    if differing:
        shown = ", ".join(differing[:6]) + (f" and {len(differing) - 6} more"
                                            if len(differing) > 6 else "")
        raise UpdateMismatch(
            f"the written-out update left other weights than segda.step.train_step in "
            f"{len(differing)} tensors ({shown}): the update cell no longer computes what the "
            "library trains with; compare it with segda.step.train_step, or rerun the cell "
            "that builds the two copies (segda.notebook.update_inputs) before both updates")
    return True


def diagnostics_summary(history, last: int = 20) -> dict[str, float]:
    """The step diagnostics (``run.diagnostics``) averaged over the last ``last`` logged
    iterations: each discriminator's accuracy per domain, the gradient norms of the source and
    the target terms, and their ratio (how hard the target term pulls, relative to the
    segmentation loss)."""
    df = history.tail(last)
    out = {c: float(df[c].astype(float).mean()) for c in df.columns if c.startswith("diag_")}
    if out.get("diag_grad_source") and "diag_grad_target" in out:
        out["target / source gradient"] = out["diag_grad_target"] / out["diag_grad_source"]
    return {k: round(v, 4) for k, v in out.items()}


def run_summary(preset: str, comparison, beside) -> str:
    """What a method notebook's run showed, in two sentences: its target mIoU with the gains
    over the control (source-only, batch norm as in the walk) and over both statistics rows
    (AdaBN; training-mode batch norm with no target loss) where the comparison has them, then the
    three-seed reference's paired gain and verdict, and whether this run lies in the reference's
    range."""
    row = rows.label(row_key(preset))
    r = comparison.loc[row]
    # The rows' own labels, as every table and figure prints them.
    against = [f"{r['gain vs source-only']:+.1f} against {rows.label(rows.control())}"]
    for col, key in (("gain vs AdaBN", rows.ADABN),
                     ("gain vs training-mode BN", "source_only_tgt_bn")):
        name = rows.label(key)
        if col in comparison.columns and np.isfinite(r[col]):
            against.append(f"{r[col]:+.1f} against {name}")
    text = (f"{row}: {r['target mIoU']:.1f} target mIoU, " + ", ".join(against)
            + f"; source mIoU {r['source mIoU']:.1f}.")
    if row in beside.index and beside.loc[row, "reference seeds"] > 0:
        v = beside.loc[row]
        text += (f"\nThree-seed reference: {v['reference gain']:+.1f} +/- "
                 f"{v['reference gain std']:.1f} against the control ({v['verdict (reference)']}); "
                 f"this run's {v['gain (this run)']:+.1f} is "
                 f"{'inside' if v['within reference range'] else 'outside'} the reference's range "
                 f"of seeds (checked band {v['range checked low']:+.1f} to "
                 f"{v['range checked high']:+.1f}).")
    return text


def setup(
    preset: str,
    run_dir: str | Path,
    *,
    max_iters: int | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    model: str | None = None,
    batch_size: int | None = None,
    image_size: Sequence[int] | None = None,
    eval_images: int | None = None,
    device: str = "auto",
    seed: int = 0,
    amp: bool = False,
    overrides: dict | None = None,
    method: str | None = None,
):
    """What every notebook builds from its parameters cell before it teaches anything: the
    runs' folder (:func:`run_root`), the config of ``preset`` (:func:`notebook_config`) and the
    datasets it names, whose sizes it prints. A missing dataset stops here with its path and
    the ``data_scripts`` command that prepares it; so does a ``preset`` of another method than
    ``method``, the one whose update the notebook writes out (a method notebook's cells would
    check and plot the wrong method).

    Returns ``(cfg, data, run_dir, params)``; ``params`` are the parameters every row of the
    notebook is trained with (``train_rows(presets, run_dir, max_iters=max_iters, **params)``).
    """
    root = run_root(run_dir)
    params = dict(dataset=dataset, data_root=data_root, model=model, batch_size=batch_size,
                  image_size=image_size, eval_images=eval_images, device=device, seed=seed,
                  amp=amp, extra=overrides)
    cfg = notebook_config(preset, max_iters=max_iters, **params)
    if method is not None and cfg.method.name != method:
        raise config.ConfigError(
            f"preset {preset} trains the method {cfg.method.name!r}, but this notebook writes "
            f"out and plots {method!r}: run {preset} in its method's notebook (python -m segda "
            f"sweep picks it), or give this notebook a preset of {method!r}")
    data = registry.build_datasets(cfg.data, cfg.model)
    print(f"{data.name}: {len(data.train_source)} source / {len(data.train_target)} target "
          f"training images, {len(data.val_target)} target validation images")
    return cfg, data, root, params


def shift_decomposition(adabn_images: int = 200, max_images: int | None = None):
    """The shipped source-only checkpoint on the target of each named embedded shift
    (:data:`segda.data.synthetic.SHIFTS`), as shipped and with AdaBN (its batch-norm statistics
    re-estimated on ``adabn_images`` target training images; no training): how much of each
    shift batch-norm statistics undo. Target mIoU (%) on the target validation images (the
    first ``max_images``; None: all)."""
    import pandas as pd

    from segda import adabn, checkpointing, evaluate
    from segda.data import synthetic

    table = {}
    for name in synthetic.SHIFTS:
        cfg = config.load("embedded/source_only", synthetic.shift_overrides(name))
        data = registry.build_datasets(cfg.data, cfg.model)
        seg = checkpointing.shipped_segmenter(cfg)
        predictor = evaluate.Predictor.from_config(cfg)
        adapted = adabn.adapt_batch_norm(seg, data.train_target, max_images=adabn_images)
        plain = 100 * evaluate.evaluate(seg, data.val_target, predictor, max_images=max_images).miou
        stats = 100 * evaluate.evaluate(adapted, data.val_target, predictor,
                                        max_images=max_images).miou
        table[name] = {"shipped source-only": plain, "+ AdaBN (no training)": stats,
                       "AdaBN's gain": stats - plain}
    return pd.DataFrame.from_dict(table, orient="index").round(2)
