"""Results tables: mean +/- std over seeds with paired gains, files, and the table of a Markdown page.

:func:`summarize` turns :func:`segda.runs.collect`'s one-row-per-run table into one row per
method; gains are paired per seed (every adaptation row of a seed starts from the same
pretrained checkpoint). :func:`write_results` writes results.md/.csv and runs.csv beside the
runs; :func:`write_readme_block` puts a table between a Markdown file's markers (the embedded
benchmark's three-seed table lives in ``docs/embedded_benchmark.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from segda import errors, io, narrate, rows, runs
from segda.errors import UserError

# The rows every gain is paired against, and the columns that hold the gains.
GAIN_COLUMNS = (("source_only", "gain vs source-only"), (rows.ADABN, "gain vs AdaBN"),
                ("source_only_tgt_bn", "gain vs training-mode BN"))


def summarize(df):
    """Mean +/- std over seeds per method, with gains paired per seed against source-only (the
    control) and the two rows that take what batch-norm statistics give for free: AdaBN (the
    control's statistics re-estimated on target images, :mod:`segda.decomposition`) and
    training-mode batch norm forwarding target images with no target loss."""
    import pandas as pd

    df = df.copy()
    df["key"] = rows.keys(df)
    grouped = df.groupby("key")
    table = pd.DataFrame({
        "target mIoU": grouped["target_miou"].mean(),
        "std": grouped["target_miou"].std(ddof=1),
        "source mIoU": grouped["source_miou"].mean(),
        "seeds": grouped["seed"].nunique(),
    })
    for ref, col in GAIN_COLUMNS:
        if ref in table.index:
            table[col] = paired_gains(df, ref).groupby("key")["gain"].mean()
    order = rows.table_order()
    # Variants (run_variant) follow the main rows, under their folder names.
    table = table.reindex([k for k in order if k in table.index]
                          + sorted(k for k in table.index if k not in order))
    table.index = [rows.label(k) for k in table.index]
    return table


def format_table(table, digits: int = 1) -> str:
    """Markdown with mean +/- std."""
    gains = [col for _, col in GAIN_COLUMNS]
    cols = ["method", "target mIoU (mean +/- std)", "source mIoU", *gains, "seeds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, row in table.iterrows():
        std = "" if np.isnan(row["std"]) else f" +/- {row['std']:.{digits}f}"

        def fmt(v, signed=False):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                return "-"
            return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"

        lines.append("| " + " | ".join([
            name, f"{row['target mIoU']:.{digits}f}{std}", fmt(row["source mIoU"]),
            *(fmt(row.get(col), True) for col in gains), str(int(row["seeds"])),
        ]) + " |")
    return "\n".join(lines)


class NoFinishedRunsError(RuntimeError, UserError):
    """A folder of runs holds none that finished: there is no table to write."""


def write_results(run_dir: str | Path, collected=None) -> str:
    """Collect every finished run under ``run_dir`` (unless ``collected`` already holds
    :func:`segda.runs.collect`'s table) into results.md/.csv and runs.csv; return the table."""
    run_dir = Path(run_dir)
    collected = runs.collect(run_dir) if collected is None else collected
    if collected.empty:
        stopped = [p.parent for p in sorted(run_dir.rglob(runs.METRICS))
                   if not runs.read_metrics(p.parent).get("evals")]
        raise NoFinishedRunsError(
            f"no finished runs under {run_dir}; " + (
                f"{stopped[0]}{f' and {len(stopped) - 1} more' if len(stopped) > 1 else ''} "
                "stopped before the end (--stop-at) and were not evaluated: rerun the train "
                "command without --stop-at to finish" if stopped else
                "a run is finished when its folder holds metrics.json (python -m segda train "
                "... finishes it)"))
    kept, notes = by_config(collected)
    for note in notes:
        print(note)
    table = summarize(kept)
    text = format_table(table) + images_note(kept)
    try:
        io.write_text_atomic(run_dir / "runs.csv", collected.to_csv(index=False))
        io.write_text_atomic(run_dir / "results.csv", table.to_csv())
        io.write_text_atomic(run_dir / "results.md", text + "\n")
    except OSError as err:  # a read-only copy of the runs: the table is still worth printing
        if not (isinstance(err, PermissionError) or err.errno in errors.USER_ERRNOS):
            raise
        print(f"note: the table is printed only, not written into {run_dir} "
              f"({errors.message(err)})", file=sys.stderr)
    return text


def images_note(collected) -> str:
    """The line under a results table that says on how many validation images its rows were
    scored (``run.eval_max_images``; an ensemble: its members'), and which rows differ."""
    if "eval_images" not in collected or collected.empty:
        return ""
    counts = collected["eval_images"].fillna(0).astype(int)
    if counts.nunique() == 1:
        n = int(counts.iloc[0])
        return ("\n\nEvery row is scored on " + (f"the first {n} validation images of each domain."
                                               if n else "every validation image."))
    per_run = ", ".join(f"{r} {n or 'all'}" for r, n in zip(collected["run"], counts, strict=True))
    return ("\n\nThe rows are scored on different numbers of validation images (run."
            f"eval_max_images; 0 or all: every image): {per_run}; compare rows of one number only.")


def by_config(collected):
    """The runs grouped by configuration rather than by folder name, and one note per change.

    A run whose config (seed included) another run already has is the same run trained twice
    (a sweep trains the controls once per preset folder): it is left out. Runs of one folder
    name with different settings (the config at seed 0: another length, another lambda) become
    rows of their own, ``<name>@<setting hash>``, instead of one row mixing them.
    """
    if "config_hash" not in collected or collected.empty:
        return collected, []
    df = collected.copy()
    notes = []
    hashed = df["config_hash"].fillna("").astype(str) != ""
    dup = hashed & df.duplicated("config_hash", keep="first")
    for r in df[dup].itertuples():
        first = df[df["config_hash"] == r.config_hash].iloc[0]["run"]
        notes.append(f"left out {r.run}: the same config ({r.config_hash}) as {first}")
    df = df[~dup].copy()
    key = rows.keys(df)
    # Only a name that holds two runs of one seed is split: a setting that differs across seeds
    # alone (each seed warm-started from its own pretraining) stays one row.
    per_seed = df.groupby([key, df["seed"]]).size()
    for name in sorted({k for (k, _), n in per_seed.items() if n > 1}):
        named = key == name
        df.loc[named, "run"] = (df.loc[named, "run"] + "@"
                                + df.loc[named, "setting_hash"].fillna("").astype(str))
        notes.append(f"{name}: runs of different configs under one name, one row per config "
                     f"({name}@<config hash>)")
    return df, notes


def select_variant(collected, suffix: str):
    """The runs whose folder name ends with ``suffix`` (e.g. ``"@400it"``), renamed without it,
    so that :func:`summarize` pairs them with each other (``advent@400it`` against
    ``source_only_tgt_bn@400it``) exactly as it pairs the main rows."""
    key = rows.keys(collected)
    chosen = collected[key.str.endswith(suffix)].copy()
    chosen["run"] = chosen["run"].str.removesuffix(suffix)
    return chosen


README_BEGIN = "<!-- segda:results {name} begin (written by python -m segda collect --readme) -->"
README_END = "<!-- segda:results {name} end -->"


def results_block(collected, wall_time_s: float | None = None) -> str:
    """The main table (variants left out) and a line saying what produced it."""
    table = summarize(collected)
    table = table.loc[[k for k in table.index if k in rows.labels()]]
    main = collected[rows.keys(collected).isin(rows.names())]
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


class ReadmeMarkersError(ValueError, UserError):
    """The Markdown file given to ``--readme`` lacks the markers of the block to replace."""


def write_readme_block(readme: str | Path, name: str, block: str) -> None:
    """Replace the text between ``name``'s begin/end markers in ``readme`` (atomically)."""
    readme = Path(readme)
    if not readme.is_file():
        raise ReadmeMarkersError(f"--readme {readme} is not a file; give the Markdown file that "
                                 "holds the table's markers (e.g. docs/embedded_benchmark.md)")
    text = readme.read_text()
    begin, end = README_BEGIN.format(name=name), README_END.format(name=name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ReadmeMarkersError(
            f"{readme} has no single pair of the block's markers, in order: add the two lines "
            f"'{begin}' and '{end}' where the table should go (or pass --readme-block NAME)")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    io.write_text_atomic(readme, f"{head}{begin}\n{block}\n{end}{tail}")


# ------------------------------------------------------------------ the committed reference

# Every run of `make suite` (three seeds), one line per run: what each notebook's own run is
# plotted against. Written by `python -m segda suite --reference` (make suite).
REFERENCE = Path(__file__).parent / "reference" / "embedded_runs.csv"
REFERENCE_COLUMNS = ["run", "method", "levels", "seed", "iterations", "target_miou", "source_miou",
                     "lambda_adv_main", "start", "wall_time_s", "cpu", "threads", "torch"]


def write_reference(collected, path: str | Path = REFERENCE) -> Path:
    """Keep ``collected``'s runs (:func:`segda.runs.collect`) as the reference CSV."""
    iou = [c for c in collected.columns if c.startswith("iou_")]
    cols = [c for c in REFERENCE_COLUMNS if c in collected.columns] + iou
    table = collected[cols].sort_values(["run"]).round(4)
    return io.write_text_atomic(path, table.to_csv(index=False))


def read_reference(path: str | Path = REFERENCE):
    """The reference runs (one line per run; ``key`` = the row, e.g. ``advent``)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no reference results at {path}; `make suite` writes them "
                                "(python -m segda suite --seeds 0 1 2 --reference)")
    df = pd.read_csv(path)
    df["key"] = rows.keys(df)
    return df


def paired_gains(df, control: str | None = None):
    """``df`` with a ``gain`` column: each run's target mIoU minus the control's of its seed
    (both start from the same checkpoint, so the pairing removes the seed's shared part)."""
    control = rows.control() if control is None else control
    df = df.copy()
    if "key" not in df:
        df["key"] = rows.keys(df)
    base = df[df["key"] == control].set_index("seed")["target_miou"]
    df["gain"] = df["target_miou"] - df["seed"].map(base)
    return df


# The smallest difference the tables resolve (points of mIoU): they print one decimal, and one
# seed's runs at another thread count differ by up to 0.05 (docs/embedded_benchmark.md, "What
# `make demo` reproduces of the table").
RESOLUTION = 0.1


def verdict(gains) -> str:
    """A row's gains over the control, one per seed (each paired with the control of its own
    seed), judged by their signs: above (or below) the control on every seed, or no consistent
    difference. One seed is not judged: a single pair cannot tell a gain from seed noise. The
    rule is :func:`segda.narrate.verdict`, the one every notebook sentence uses."""
    return narrate.verdict(gains)


def against_reference(own: dict[str, float], reference, control: str | None = None):
    """One notebook's run beside the reference, per row.

    Args:
        own: row key (``"advent"``) -> this run's target mIoU (%); it must hold the control
            for gains to be computed.
        reference: :func:`read_reference`'s table.

    Columns: this run's target mIoU and gain over the control; the reference's mean, std,
    seeds and per-seed gains (mean, std, min, max); whether this run's gain lies within the
    reference's range of gains (widened by :data:`RESOLUTION` on each side); the sign of this
    run's gain (one seed) and the reference's verdict (:func:`verdict`: the signs of its
    per-seed gains).
    """
    import pandas as pd

    control = rows.control() if control is None else control
    ref = paired_gains(reference, control)
    own_control = own.get(control, np.nan)
    table = {}
    for key, value in own.items():
        seeds = ref[ref["key"] == key]
        g = seeds["gain"]
        own_gain = value - own_control
        spread = g.std(ddof=1) if len(g) > 1 else np.nan
        table[rows.label(key)] = {
            "this run": value, "gain (this run)": own_gain,
            "reference mean": seeds["target_miou"].mean(),
            "reference std": seeds["target_miou"].std(ddof=1) if len(seeds) > 1 else np.nan,
            "reference seeds": len(seeds),
            "reference gain": g.mean(), "reference gain std": spread,
            "reference gain min": g.min(), "reference gain max": g.max(),
            # the band "within reference range" checks, drawn as such by viz.plot_against_reference
            "range checked low": g.min() - RESOLUTION, "range checked high": g.max() + RESOLUTION,
            "within reference range": bool(g.min() - RESOLUTION <= own_gain <= g.max() + RESOLUTION)
            if len(g) else False,
            "verdict (this run)": "the control" if key == control
            else ("above the control" if own_gain > 0 else "below the control" if own_gain < 0
                  else "equal to the control"),
            "verdict (reference)": "the control" if key == control else verdict(g),
        }
    return pd.DataFrame.from_dict(table, orient="index")


def lambda_sweep(reference, row: str = "output_adv_single"):
    """The reference's runs of ``row`` at every adversarial weight (the row itself and its
    ``<row>@lambda...`` variants), with their gains over the control of the same seed."""
    df = paired_gains(reference)
    base = df["key"].str.split("@").str[0]
    sweep = df[(base == row) & (df["key"].eq(row) | df["key"].str.contains("@lambda"))]
    return sweep[["key", "seed", "lambda_adv_main", "target_miou", "gain"]].reset_index(drop=True)


def study_table(reference, study):
    """One study of the reference (``segda.experiments.STUDIES[name]``): per run, its setting,
    its control, its target mIoU over seeds and its gain paired per seed with the control of
    the same seed (each gain, their mean and std, and :func:`verdict`). Runs the reference
    lacks are left out."""
    import pandas as pd

    df = reference.copy()
    if "key" not in df:
        df["key"] = rows.keys(df)
    by_key = {k: g.set_index("seed")["target_miou"] for k, g in df.groupby("key")}
    table = {}
    for run in study:
        if run.name not in by_key or run.control not in by_key:
            continue
        own, base = by_key[run.name], by_key[run.control]
        gains = (own - base.reindex(own.index)).dropna()
        table[run.name] = {
            "setting": ", ".join(f"{k}={v}" for k, v in run.overrides) or "the default",
            "control": run.control,
            "target mIoU": own.mean(),
            "gain": gains.mean() if run.name != run.control else 0.0,
            "gain std": gains.std(ddof=1) if len(gains) > 1 else np.nan,
            "gains per seed": " / ".join(f"{g:+.1f}" for g in gains),
            "seeds": len(gains),
            "verdict": "the control" if run.name == run.control else verdict(gains),
        }
    return pd.DataFrame.from_dict(table, orient="index")


def beside_collected(collected, reference=None, seed: int | None = None):
    """:func:`against_reference` for the runs of one seed of :func:`segda.runs.collect`'s
    table (the lowest seed found, unless ``seed`` is given): what ``make demo`` prints."""
    df = collected.copy()
    df["key"] = rows.keys(df)
    seed = int(df["seed"].min()) if seed is None else seed
    mine = df[df["seed"] == seed]
    own = {k: float(mine.loc[mine["key"] == k, "target_miou"].iloc[0])
           for k in rows.compared() if (mine["key"] == k).any()}
    return against_reference(own, read_reference() if reference is None else reference)


def format_beside(table, digits: int = 1) -> str:
    """Markdown of :func:`against_reference`'s table."""
    cols = ["row", "this run", "gain vs the control (this run)",
            "reference gain (mean +/- std, seeds)", "this run inside the reference's range",
            "verdict (reference)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in table.iterrows():
        std = "" if np.isnan(r["reference gain std"]) else f" +/- {r['reference gain std']:.{digits}f}"
        lines.append("| " + " | ".join([
            name, f"{r['this run']:.{digits}f}", f"{r['gain (this run)']:+.{digits}f}",
            f"{r['reference gain']:+.{digits}f}{std} ({int(r['reference seeds'])})",
            "yes" if r["within reference range"] else "no", r["verdict (reference)"],
        ]) + " |")
    return "\n".join(lines)


def write_readme_table(readme: str | Path, name: str, collected, variant: str | None = None,
                       wall_time_s: float | None = None) -> str:
    """The main table of ``collected`` (``variant``: of the runs named ``<row><variant>``,
    :func:`select_variant`), with its machine and wall time, between ``name``'s markers of the
    Markdown file ``readme`` (docs/embedded_benchmark.md holds the embedded benchmark's);
    returns the line saying so."""
    if variant:
        collected = select_variant(collected, variant)
    write_readme_block(readme, name, results_block(collected, wall_time_s))
    return f"wrote the table into {readme} (block {name!r})"
# ------------------------------------------------------------------ the decomposition

def decomposition(collected):
    """Every trained row of :func:`segda.runs.collect`'s table beside the same model with
    post-hoc AdaBN (:mod:`segda.decomposition`), means over seeds: as trained, with AdaBN, and
    the gains paired per seed against the control and both statistics rows."""
    import pandas as pd

    df = collected.copy()
    df["key"] = rows.keys(df)
    by_key = {k: g.set_index("seed")["target_miou"] for k, g in df.groupby("key")}

    def paired(key, ref):
        if key not in by_key or ref not in by_key:
            return np.nan
        return float((by_key[key] - by_key[ref].reindex(by_key[key].index)).dropna().mean())

    table = {}
    for key in [k for k in rows.table_order() if k in by_key and not k.endswith(rows.POSTHOC_SUFFIX)]:
        derived = rows.ADABN if key == rows.control() else key + rows.POSTHOC_SUFFIX
        table[rows.label(key)] = {
            "as trained": by_key[key].mean(),
            "with AdaBN": by_key[derived].mean() if derived in by_key and key != rows.ADABN else np.nan,
            "gain vs source-only": paired(key, rows.control()),
            "gain vs AdaBN": paired(key, rows.ADABN),
            "gain vs training-mode BN": paired(key, "source_only_tgt_bn"),
            "with AdaBN, gain vs AdaBN": paired(derived, rows.ADABN) if key != rows.ADABN else np.nan,
            "seeds": len(by_key[key]),
        }
    return pd.DataFrame.from_dict(table, orient="index")


def miniature_targets(collected) -> list[tuple[str, str, bool]]:
    """The targets a faithful miniature meets (docs/embedded_benchmark.md, "The gap's shape"),
    each as ``(target, measured, met)``, from means over seeds paired per seed: the gap's size
    and the share batch-norm statistics take of it, what the papers' best rows add beyond both
    statistics rows, and the papers' ordering of the methods."""
    df = collected.copy()
    df["key"] = rows.keys(df)
    by_key = {k: g.set_index("seed")["target_miou"] for k, g in df.groupby("key")}

    def mean(key):
        return float(by_key[key].mean()) if key in by_key else np.nan

    def gain(key, ref):
        if key not in by_key or ref not in by_key:
            return np.nan
        return float((by_key[key] - by_key[ref].reindex(by_key[key].index)).dropna().mean())

    control, oracle = mean(rows.control()), mean("oracle")
    out = []
    ratio = control / oracle
    out.append(("control / oracle between 0.45 and 0.65", f"{ratio:.2f}", 0.45 <= ratio <= 0.65))
    share = gain(rows.ADABN, rows.control()) / (oracle - control)
    out.append(("AdaBN closes at most 35 % of the control -> oracle gap", f"{100 * share:.0f} %",
                share <= 0.35))
    for key in ("advent", "output_adv_multi", rows.ensemble().key):
        for ref in (rows.ADABN, "source_only_tgt_bn"):
            g = gain(key, ref)
            out.append((f"{rows.label(key)} at least 1.0 above {rows.label(ref)}", f"{g:+.1f}",
                         g >= 1.0))
    for key in [*rows.adaptation(), rows.ensemble().key]:
        if key in (rows.control(), "feature_adv", "source_only_tgt_bn"):
            continue
        g = gain(key + rows.POSTHOC_SUFFIX, rows.ADABN)
        out.append((f"{rows.label(key)} with AdaBN at least AdaBN alone", f"{g:+.1f}", g >= 0))
    g = gain("feature_adv" + rows.POSTHOC_SUFFIX, rows.ADABN)
    out.append(("feature-level with AdaBN beside AdaBN alone (reported either way)", f"{g:+.1f}", True))
    order = [("feature_adv", rows.control(), 0.0, ">"), ("output_adv_single", "feature_adv", 0.0, ">"),
             ("output_adv_multi", "output_adv_single", 0.0, ">="), ("minent", rows.control(), 1.0, ">="),
             ("advent", "minent", 0.0, ">=")]
    for key, ref, margin, op in order:
        g = gain(key, ref)
        met = g > margin if op == ">" else g >= margin
        out.append((f"{rows.label(key)} {op} {rows.label(ref)}" + (f" + {margin:.1f}" if margin else ""),
                    f"{g:+.1f}", met))
    ens = rows.ensemble()
    best = max(ens.members, key=mean)
    g = gain(ens.key, best)
    out.append((f"{ens.label} >= the better member ({rows.label(best)})", f"{g:+.1f}", g >= 0))
    return out


def format_targets(targets) -> str:
    """Markdown of :func:`miniature_targets`."""
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else 'NO'} |" for t, m, ok in targets]
    return "\n".join(lines)


def format_decomposition_beside(collected, reference=None, seed: int | None = None) -> str:
    """Markdown: each trained row of one seed of ``collected`` (the lowest, unless ``seed``) as
    trained and with post-hoc AdaBN, its gain over AdaBN alone, beside the reference's means
    over its seeds (:func:`decomposition`)."""
    df = collected.copy()
    df["key"] = rows.keys(df)
    seed = int(df["seed"].min()) if seed is None else seed
    own = decomposition(df[df["seed"] == seed])
    ref = decomposition(read_reference() if reference is None else reference)

    def fmt(v, signed=False):
        return "-" if v is None or not np.isfinite(v) else (f"{v:+.1f}" if signed else f"{v:.1f}")

    cols = ["row", "this run", "this run + AdaBN", "gain vs AdaBN (this run)",
            "reference", "reference + AdaBN", "reference gain vs AdaBN"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in own.iterrows():
        g = ref.loc[name] if name in ref.index else None
        lines.append("| " + " | ".join([
            name, fmt(r["as trained"]), fmt(r["with AdaBN"]), fmt(r["gain vs AdaBN"], True),
            fmt(None if g is None else g["as trained"]), fmt(None if g is None else g["with AdaBN"]),
            fmt(None if g is None else g["gain vs AdaBN"], True),
        ]) + " |")
    return "\n".join(lines)
