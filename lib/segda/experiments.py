"""The embedded-benchmark experiment: every method over seeds, warm-started like ADVENT.

Protocol (a warm start as ADVENT starts from pretrained weights; values from a prototype study):

1. ``embedded/source_pretrain``: the small segmenter trained on source from scratch;
2. ``embedded/oracle``: the same recipe on labelled target images (the upper reference);
3. each adaptation preset fine-tunes from (1) for the same number of iterations, including
   the plain ``source_only`` continuation and the batch-norm control, so every row has had the
   same amount of training;
4. the AdvEnt+MinEnt ensemble (0.5 / 0.5 sum of main logits, ADVENT's) is evaluated from the
   two trained models.

Gains are reported against plain source-only *and* against the batch-norm control.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segda import config, runs

ADAPTATION_PRESETS: tuple[str, ...] = (
    "source_only", "source_only_tgt_bn", "feature_adv", "output_adv_single",
    "output_adv_multi", "minent", "minent_cp", "advent",
)
ENSEMBLE = ("advent", "minent")
ROW_NAMES = {
    "source_only": "source-only", "source_only_tgt_bn": "source-only + target BN (control)",
    "feature_adv": "feature-level adversarial", "output_adv_single": "AdaptSegNet single-level",
    "output_adv_multi": "AdaptSegNet multi-level", "minent": "MinEnt", "minent_cp": "MinEnt + CP",
    "advent": "AdvEnt", "advent+minent": "AdvEnt + MinEnt (ensemble)",
    "oracle": "oracle (target-trained)", "source_pretrain": "source-only (pretrained checkpoint)",
}


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
    from segda.data import registry

    root = Path(run_root) / f"seed{seed}"
    pre_cfg = preset_config("source_pretrain", seed, pretrain_overrides)
    data = registry.build_datasets(pre_cfg.data, pre_cfg.model)
    runs.ensure_run(root / "source_pretrain", pre_cfg, data=data)
    if oracle:
        ora_cfg = preset_config("oracle", seed, pretrain_overrides)
        runs.ensure_run(root / "oracle", ora_cfg, data=registry.build_datasets(ora_cfg.data))
    init = root / "source_pretrain" / "last.pth"
    results = {}
    for preset in presets:
        cfg = preset_config(preset, seed, adapt_overrides, init)
        results[preset] = runs.ensure_run(root / preset, cfg, data=data)
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
    from segda.data import registry

    if name in ROW_NAMES:
        raise ValueError(f"variant name {name!r} is a main-table row; choose another name")
    root = Path(run_root) / f"seed{seed}"
    init = None
    if preset not in WARM_START_EXEMPT:
        pre_cfg = preset_config("source_pretrain", seed, pretrain_overrides)
        runs.ensure_run(root / "source_pretrain", pre_cfg,
                        data=registry.build_datasets(pre_cfg.data, pre_cfg.model))
        init = root / "source_pretrain" / "last.pth"
    cfg = preset_config(preset, seed, overrides, init)
    return runs.ensure_run(root / name, cfg, data=registry.build_datasets(cfg.data, cfg.model))


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
    from segda import evaluate

    models = [results[name].seg for name in members]
    kw = dict(weights=list(weights), combine=combine, device=device, max_images=max_images)
    res = evaluate.evaluate(models, data.val_target, **kw)
    entry = {"iteration": results[members[0]].state.iteration,
             "target_miou": res.miou, "target_iou": [float(x) for x in res.iou]}
    if data.val_source is not None:
        res_src = evaluate.evaluate(models, data.val_source, **kw)
        entry.update(source_miou=res_src.miou, source_iou=[float(x) for x in res_src.iou])
    out = Path(run_root) / f"seed{seed}" / (name or "+".join(members))
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({
        "method": "+".join(members), "levels": "multi", "seed": seed, "train_on": "source",
        "iteration": entry["iteration"], "evals": [entry],
        "ensemble": {"members": list(members), "weights": list(weights), "combine": combine},
    }, indent=1))
    return res


def summarize(df):
    """Mean +/- std over seeds per method, with gains against source-only and the BN control."""
    import pandas as pd

    df = df.copy()
    df["key"] = df["run"].str.split("/").str[-1]
    grouped = df.groupby("key")
    table = pd.DataFrame({
        "target mIoU": grouped["target_miou"].mean(),
        "std": grouped["target_miou"].std(ddof=1),
        "source mIoU": grouped["source_miou"].mean(),
        "seeds": grouped["seed"].nunique(),
    })
    for ref, col in (("source_only", "gain vs source-only"),
                     ("source_only_tgt_bn", "gain vs BN control")):
        if ref in table.index:
            # Paired per seed: the same pretrained checkpoint underlies both rows.
            base = df[df["key"] == ref].set_index("seed")["target_miou"]
            gains = df.assign(g=df["target_miou"] - df["seed"].map(base)).groupby("key")["g"]
            table[col] = gains.mean()
    order = ["source_pretrain", *ADAPTATION_PRESETS, "advent+minent", "oracle"]
    # Variants (run_variant) follow the main rows, under their folder names.
    table = table.reindex([k for k in order if k in table.index]
                          + sorted(k for k in table.index if k not in order))
    table.index = [ROW_NAMES.get(k, k) for k in table.index]
    return table


def format_table(table, digits: int = 1) -> str:
    """Markdown with mean +/- std."""
    cols = ["method", "target mIoU (mean +/- std)", "source mIoU", "gain vs source-only",
            "gain vs BN control", "seeds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, row in table.iterrows():
        std = "" if np.isnan(row["std"]) else f" +/- {row['std']:.{digits}f}"

        def fmt(v, signed=False):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                return "-"
            return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"

        lines.append("| " + " | ".join([
            name, f"{row['target mIoU']:.{digits}f}{std}", fmt(row["source mIoU"]),
            fmt(row.get("gain vs source-only"), True), fmt(row.get("gain vs BN control"), True),
            str(int(row["seeds"])),
        ]) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ notebooks' entry points

WARM_START_EXEMPT = ("source_pretrain", "oracle")


def write_results(run_dir: str | Path, collected=None) -> str:
    """Collect every finished run under ``run_dir`` (unless ``collected`` already holds
    :func:`segda.runs.collect`'s table) into results.md/.csv and runs.csv; return the table."""
    run_dir = Path(run_dir)
    collected = runs.collect(run_dir) if collected is None else collected
    if collected.empty:
        raise RuntimeError(f"no finished runs under {run_dir}")
    table = summarize(collected)
    text = format_table(table)
    collected.to_csv(run_dir / "runs.csv", index=False)
    table.to_csv(run_dir / "results.csv")
    (run_dir / "results.md").write_text(text + "\n")
    return text


def select_variant(collected, suffix: str):
    """The runs whose folder name ends with ``suffix`` (e.g. ``"@400it"``), renamed without it,
    so that :func:`summarize` pairs them with each other (``advent@400it`` against
    ``source_only_tgt_bn@400it``) exactly as it pairs the main rows."""
    key = collected["run"].str.split("/").str[-1]
    chosen = collected[key.str.endswith(suffix)].copy()
    chosen["run"] = chosen["run"].str.removesuffix(suffix)
    return chosen


README_BEGIN = "<!-- segda:results {name} begin (written by python -m segda collect --readme) -->"
README_END = "<!-- segda:results {name} end -->"


def results_block(collected, wall_time_s: float | None = None) -> str:
    """The main table (variants left out) and a line saying what produced it."""
    table = summarize(collected)
    table = table.loc[[k for k in table.index if k in ROW_NAMES.values()]]
    main = collected[collected["run"].str.split("/").str[-1].isin(list(ROW_NAMES))]
    machines = sorted({" / ".join(x for x in (r.cpu, r.gpu) if isinstance(x, str) and x)
                       for r in main.itertuples()} - {""})
    torches = sorted({t for t in main["torch"] if isinstance(t, str) and t})
    threads = sorted({str(t) for t in main.get("threads", []) if str(t) not in ("", "nan")})
    timed = main["wall_time_s"].dropna()
    lines = [format_table(table), ""]
    lines.append(f"{len(main)} runs over seeds {sorted(set(main['seed']))}; "
                 f"machine: {'; '.join(machines) or 'not recorded'}"
                 + (f" (torch threads per run: {', '.join(threads)})" if threads else "")
                 + f"; torch {', '.join(torches) or '?'}.")
    lines.append(f"Training wall time recorded for {len(timed)} of {len(main)} runs: "
                 f"{timed.sum():.0f} s in all." if len(timed) else
                 "Training wall time: not recorded in these runs' metrics.")
    if wall_time_s is not None:
        lines.append(f"This command's wall time: {wall_time_s:.0f} s.")
    return "\n".join(lines)


def write_readme_block(readme: str | Path, name: str, block: str) -> None:
    """Replace the text between ``name``'s begin/end markers in ``readme`` (atomically)."""
    readme = Path(readme)
    text = readme.read_text()
    begin, end = README_BEGIN.format(name=name), README_END.format(name=name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"{readme} needs exactly one pair of markers, in order:\n{begin}\n{end}")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    tmp = readme.with_name(readme.name + ".tmp")
    tmp.write_text(f"{head}{begin}\n{block}\n{end}{tail}")
    tmp.replace(readme)


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
    """A config from the notebooks' papermill parameters (literals) on top of a preset.

    ``max_iters`` is the number of iterations to run. Presets whose poly schedule ends where
    the run ends (the embedded ones) get both ``optim.max_iters`` and ``optim.early_stop``;
    the paper presets keep their 250k-iteration schedule horizon and only stop earlier,
    as the official code does. ``image_size`` is ``[W, H]`` for both domains; ``None`` keeps
    the preset's sizes (1280x720 / 1024x512 for the paper rows).
    """
    base = config.load(preset)
    over: dict = {"run.seed": seed, "run.device": device, "run.amp": amp,
                  "run.progress": progress}
    if dataset is not None:
        over["data.dataset"] = dataset
    if data_root is not None:
        over["data.root"] = data_root
    if model is not None:
        over["model.name"] = model
    if max_iters is not None:
        over["optim.early_stop"] = max_iters
        if base.optim.max_iters == base.optim.early_stop:
            over["optim.max_iters"] = max_iters
    if batch_size is not None:
        over["data.batch_size"] = batch_size
    if eval_images is not None:
        over["run.eval_max_images"] = eval_images
    if image_size is not None:
        over["data.source_size"] = list(image_size)
        over["data.target_size"] = list(image_size)
    over.update(extra or {})
    return config.load(preset, over)


def run_folder(run_dir: str | Path, preset: str, seed: int) -> Path:
    return Path(run_dir) / f"seed{seed}" / preset.split("/")[-1]


def train_preset(
    preset: str,
    run_dir: str | Path,
    *,
    pretrain_iters: int | None = None,
    data=None,
    **params,
):
    """Train (or reuse from ``run_dir``) one preset as a notebook asks for it.

    Embedded adaptation presets warm-start from the source-only checkpoint of the same seed
    (``embedded/source_pretrain`` with ``max_iters = pretrain_iters``), which is trained
    first when missing; notebooks therefore share one source-only model per seed.
    """
    from segda import runs

    seed = params.get("seed", 0)
    name = preset.split("/")[-1]
    extra = dict(params.pop("extra", None) or {})
    if preset.startswith("embedded/") and name not in WARM_START_EXEMPT:
        pre = train_preset(
            "embedded/source_pretrain", run_dir, data=data,
            **{**params, "max_iters": pretrain_iters},
        )
        extra["model.init_checkpoint"] = str(pre.run_dir / "last.pth")
    elif preset.startswith("embedded/"):
        params = {**params, "max_iters": pretrain_iters or params.get("max_iters")}
    cfg = notebook_config(preset, extra=extra, **params)
    if data is not None and cfg.data.train_on != "source":
        data = None  # an oracle trains on labelled target images: its own datasets
    return runs.ensure_run(run_folder(run_dir, preset, seed), cfg, data=data)


def sibling(preset: str, name: str) -> str:
    """The preset ``name`` of the same family: ``sibling("paper/advent", "minent")`` is
    ``"paper/minent"``, so a notebook run at paper scale compares against paper-scale runs."""
    family = preset.split("/")[0] if "/" in preset else "embedded"
    return f"{family}/{name}"


def train_rows(presets: Sequence[str], run_dir: str | Path, **kwargs) -> dict:
    """``{preset name: RunResult}`` for several presets (trained or reused)."""
    return {p.split("/")[-1]: train_preset(p, run_dir, **kwargs) for p in presets}


def compare(results: dict):
    """Target and source mIoU (%) of trained runs (their final evaluation), with gains against
    the first two rows: pass plain source-only and the batch-norm control first."""
    import pandas as pd

    rows = {}
    for name, res in results.items():
        final = res.final_eval or {}
        rows[ROW_NAMES.get(name, name)] = {
            "target mIoU": 100 * final.get("target_miou", np.nan),
            "source mIoU": 100 * final.get("source_miou", np.nan),
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    names = list(df.index)
    if len(names) >= 2:
        df["gain vs source-only"] = df["target mIoU"] - df.loc[names[0], "target mIoU"]
        df["gain vs BN control"] = df["target mIoU"] - df.loc[names[1], "target mIoU"]
    return df.round(2)
