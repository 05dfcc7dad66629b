"""The snapshot ledger: every kept snapshot of one or more runs, evaluated on the target
validation split, and per run set the numbers a reproduction is judged by.

For each set of runs that differ only in their seed (``python -m segda ledger RUN_DIR...``):

* **last iterate**: the model at the end of training, the number segda reports;
* **best snapshot**: the snapshot with the highest mIoU on the target validation split, the
  papers' rule (ADVENT's ``best`` test mode; AdaptSegNet's authors also picked snapshots). It
  chooses the model with target labels, so it is reported beside the last iterate, never
  instead of it;
* mean +/- std (sample std, ``ddof=1``) of both over the seeds, and the papers' number for
  the row (:mod:`segda.paper_results`).

**Snapshot names.** segda's ``iter_N.pth`` (and ``last.pth``) holds the model after N updates.
The official loops save ``model_i.pth`` (ADVENT) / ``GTA5_i.pth`` (AdaptSegNet) after the
update of loop index i, that is after i + 1 updates; AdaptSegNet's final file,
``GTA5_<NUM_STEPS_STOP>.pth``, is the exception: it is saved at index NUM_STEPS_STOP - 1, after
NUM_STEPS_STOP updates. The ledger names every snapshot by the official file that would hold
the same number of updates (:func:`official_name`): ``paper/advent``'s last iterate (120,001
updates) is ``model_120000``; its ``iter_002000.pth`` is ``model_1999``, one update short of
the official ``model_2000``.

Files written into ``out``: ``ledger.md`` (one table per run set), ``ledger.csv`` (the same
rows with per-class IoU) and ``ledger_snapshots.csv`` (every snapshot, per-class IoU). A later
call reuses the rows of ``ledger_snapshots.csv`` whose checkpoint file is unchanged, so only new
snapshots are evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segda import checkpointing, config, evaluate, paper_results, repro, rows, runs
from segda.data import registry
from segda.labels import CLASS_NAMES, CLASS_SUBSETS

SNAPSHOT = re.compile(r"^iter_(\d+)\.pth$")
SNAPSHOTS_CSV, TABLE_CSV, TABLE_MD = "ledger_snapshots.csv", "ledger.csv", "ledger.md"
BACKBONES = {"deeplabv2_resnet101": "resnet101", "deeplab_vgg16": "vgg16"}


def official_name(cfg: config.TrainConfig, updates: int) -> str:
    """The official snapshot file that holds ``updates`` updates (see the module docstring),
    named as its row's official code names them (:func:`segda.rows.snapshot_naming`)."""
    if rows.snapshot_naming(cfg) == "advent":
        return f"model_{updates - 1}"
    if updates == cfg.optim.early_stop:  # AdaptSegNet saves its last file at index stop - 1
        return f"GTA5_{updates}"
    return f"GTA5_{updates - 1}"


def papers_number(cfg: config.TrainConfig) -> tuple[float, str] | None:
    """(mIoU, where from) of the papers' row for this config, or None (no such row)."""
    if cfg.data.dataset != "gta5_cityscapes":
        return None
    key = (BACKBONES.get(cfg.model.name, cfg.model.name), rows.row_of(cfg))
    entry = paper_results.GTA5_CITYSCAPES.get(key)
    return None if entry is None else (entry[0], f"{entry[3]}, {entry[2]}")


def eval_classes(cfg: config.TrainConfig) -> tuple[int, ...] | None:
    """The classes the mIoU averages: SYNTHIA rows use the 16-class protocol, others all 19."""
    return CLASS_SUBSETS[16] if cfg.data.dataset == "synthia_cityscapes" else None


@dataclass(frozen=True)
class Snapshot:
    run_dir: Path
    path: Path
    is_last: bool


def snapshot_files(run_dir: str | Path) -> list[Snapshot]:
    """The kept snapshots ``iter_N.pth`` of a run and its ``last.pth``, in file-name order."""
    run_dir = Path(run_dir)
    kept = sorted(p for p in run_dir.iterdir() if SNAPSHOT.match(p.name))
    out = [Snapshot(run_dir, p, False) for p in kept]
    if (run_dir / runs.CHECKPOINT).exists():
        out.append(Snapshot(run_dir, run_dir / runs.CHECKPOINT, True))
    return out


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders: each path that holds a ``last.pth``, else every folder under it that does."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / runs.CHECKPOINT).exists():
            found.append(p)
        else:
            found.extend(sorted(c.parent for c in p.rglob(runs.CHECKPOINT)))
    if not found:
        raise FileNotFoundError(f"no run folder (one with {runs.CHECKPOINT}) under {list(paths)}")
    return list(dict.fromkeys(found))


def _file_stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def evaluate_snapshots(
    run_dirs: Sequence[Path],
    *,
    max_images: int | None = None,
    device: str = "auto",
    overrides: dict | None = None,
    previous=None,
):
    """One row per distinct snapshot (by number of updates) of every run: run, seed,
    snapshot file, updates, official name, whether it is the last iterate, how it was
    predicted, mIoU (%) and the per-class IoU (%). Each run's snapshots are predicted as its
    fit loop evaluated them (:meth:`segda.evaluate.Predictor.from_config`). ``overrides``
    (``data.*`` keys) change where the validation split is read; ``previous`` (an earlier
    result) supplies rows of unchanged files predicted the same way."""
    import pandas as pd

    device = repro.resolve_device(device)
    reuse = {}
    if previous is not None and len(previous):
        reuse = {(r["file"], r["stamp"], r["images_asked"], r["val_split"], r.get("prediction")): r
                 for r in previous.to_dict("records")}
    rows = []
    for run_dir in run_dirs:
        cfg = runs.read_config(run_dir)
        if cfg is None:
            raise FileNotFoundError(f"{run_dir} holds no {runs.CONFIG}")
        data_cfg = cfg.replace(overrides) if overrides else cfg
        predictor = evaluate.Predictor.from_config(cfg, device)
        data, classes, seg = None, eval_classes(cfg), None
        where = f"{data_cfg.data.dataset}:{data_cfg.data.root}:{data_cfg.data.val_list}"
        by_updates: dict[int, dict] = {}
        for snap in snapshot_files(run_dir):
            asked = -1 if max_images is None else int(max_images)
            key = (str(snap.path), _file_stamp(snap.path), asked, where, predictor.describe())
            if key in reuse:
                row = dict(reuse[key])
            else:
                # The safe loader: a damaged or foreign file is an error that names it.
                blob = checkpointing.load_run_checkpoint(snap.path)
                if seg is None:
                    seg, _ = checkpointing.segmenter_from_run(blob, snap.path)
                else:  # the run's other snapshots: same architecture, new weights
                    seg.load_state_dict(blob["segmenter"])
                run_cfg = checkpointing.config_of(blob, snap.path)
                if data is None:
                    data = registry.build_datasets(data_cfg.data, data_cfg.model)
                res = evaluate.evaluate(seg, data.val_target, predictor, max_images=max_images)
                updates = int(blob["iteration"])
                row = {
                    "run": str(run_dir), "seed": run_cfg.run.seed, "file": str(snap.path),
                    "stamp": key[1], "images_asked": asked, "val_split": where,
                    "prediction": key[4], "images": res.num_images,
                    "snapshot": snap.path.name, "updates": updates,
                    "official": official_name(run_cfg, updates),
                    "miou": 100 * (res.miou if classes is None else res.miou_over(classes)),
                    **{f"iou_{c}": 100 * float(v) for c, v in zip(CLASS_NAMES, res.iou, strict=False)},
                }
                del blob
            row["last"] = snap.is_last
            # last.pth repeats the final kept snapshot when the run ends on the cadence
            seen = by_updates.get(row["updates"])
            if seen is None:
                by_updates[row["updates"]] = row
            elif snap.is_last:
                seen["last"] = True
        rows.extend(sorted(by_updates.values(), key=lambda r: r["updates"]))
    return pd.DataFrame(rows)


# Run settings that do not change the trained weights: runs that differ only in these (and the
# seed) form one set, e.g. a notebook's seed-0 run and `python -m segda train` runs of seeds 1, 2.
NOT_TRAINING = {"run.seed": 0, "run.device": "auto", "run.progress": False, "run.log_every": 1,
                "run.tensorboard": False, "run.eval_every": 0, "run.eval_max_images": 0,
                "run.checkpoint_every": 0, "run.keep_snapshots": False,
                "run.diagnostics": False}


def run_sets(run_dirs: Sequence[Path]) -> list[list[Path]]:
    """Group runs whose configs differ only in the seed and :data:`NOT_TRAINING` settings."""
    groups: dict[str, list[Path]] = {}
    for run_dir in run_dirs:
        cfg = runs.read_config(run_dir)
        key = cfg.replace(NOT_TRAINING).to_yaml()
        groups.setdefault(key, []).append(run_dir)
    return list(groups.values())


def set_names(groups: Sequence[Sequence[Path]]) -> list[str]:
    """A name per run set: its runs' folder name(s); sets that would share one get their
    dataset, then their config hash, after it (``minent_vgg_cp (synthia_cityscapes)``)."""
    names = [" / ".join(sorted({p.name for p in group})) for group in groups]
    for extra in (lambda c: c.data.dataset, lambda c: runs.config_hash(c.replace(NOT_TRAINING))):
        clash = {n for n in names if names.count(n) > 1}
        names = [f"{n} ({extra(runs.read_config(g[0]))})" if n in clash else n
                 for n, g in zip(names, groups, strict=True)]
    return names


def summarize_set(snaps, name: str, cfg: config.TrainConfig):
    """The ledger rows of one run set from its snapshot rows: per seed the last iterate and the
    best snapshot, then their mean and std over seeds, then the papers' number."""
    import pandas as pd

    iou_cols = [c for c in snaps.columns if c.startswith("iou_")]
    # A seed whose last iterate is short of the planned updates is still training or was stopped.
    finished = {seed: int(group.loc[group["last"], "updates"].max()) >= cfg.optim.early_stop
                for seed, group in snaps.groupby("seed", sort=True)}
    out = []
    for kind in ("last", "best"):
        picked = []
        for seed, group in snaps.groupby("seed", sort=True):
            if kind == "last":
                row = group[group["last"]].iloc[-1]
            else:  # highest mIoU; the earliest snapshot wins a tie
                row = group.sort_values(["miou", "updates"], ascending=[False, True]).iloc[0]
            picked.append(row)
            out.append({"set": name, "row": kind, "seed": str(seed), "snapshot": row["snapshot"],
                        "updates": int(row["updates"]), "official": row["official"],
                        "finished": finished[seed], "miou": row["miou"],
                        **{c: row[c] for c in iou_cols}})
        values = pd.DataFrame(picked)
        for stat in ("mean", "std"):
            fn = (lambda s: s.mean()) if stat == "mean" else (lambda s: s.std(ddof=1))
            out.append({"set": name, "row": kind, "seed": stat, "snapshot": "", "updates": None,
                        "official": "", "finished": all(finished.values()),
                        "miou": fn(values["miou"]), **{c: fn(values[c]) for c in iou_cols}})
    paper = papers_number(cfg)
    if paper is not None:
        per_class = paper_results.GTA5_CITYSCAPES[
            (BACKBONES.get(cfg.model.name, cfg.model.name), rows.row_of(cfg))][1]
        out.append({"set": name, "row": "papers", "seed": "", "snapshot": "", "updates": None,
                    "official": paper[1], "miou": paper[0],
                    **{c: (per_class[i] if per_class else np.nan) for i, c in enumerate(iou_cols)}})
    return pd.DataFrame(out).astype({"updates": "Int64"})


def _updates(n: int) -> str:
    return f"{n} update" if n == 1 else f"{n} updates"


def _held(n: int, unfinished: bool, cfg: config.TrainConfig) -> str:
    """What a snapshot holds; a last iterate short of the planned updates says so."""
    return f"unfinished: {n} of {_updates(cfg.optim.early_stop)}" if unfinished else _updates(n)


def format_set(table, snaps, name: str, cfg: config.TrainConfig) -> str:
    """One run set's Markdown table: a column per seed, then mean +/- std."""
    seeds = sorted(snaps["seed"].unique())
    classes = "16 classes" if eval_classes(cfg) else f"{cfg.model.num_classes} classes"
    images = sorted(set(int(x) for x in snaps["images"]))
    folder = name.split(" ")[0]
    title = rows.label(folder if rows.find(folder) else rows.row_of(cfg))
    lines = [
        f"### {title} ({name}): {cfg.model.name}, {cfg.data.dataset}",
        "",
        f"{len(seeds)} run(s), seeds {', '.join(str(s) for s in seeds)}; "
        f"{cfg.optim.early_stop} updates; mIoU (%) over {classes} on "
        f"{'/'.join(map(str, images))} target validation images; "
        f"{len(snaps)} snapshots evaluated.",
        "",
    ]
    last = table[table["row"] == "last"].set_index("seed")
    unfinished = [s for s in seeds if not last.loc[str(s), "finished"]]
    if unfinished:
        held = ", ".join(f"seed {s}: {int(last.loc[str(s), 'updates'])}" for s in unfinished)
        lines += [
            f"**Unfinished runs** ({held} of {cfg.optim.early_stop} updates): still training "
            "or stopped early, so their last iterate is the model so far, not the final one, and "
            "the mean mixes it in. Finish them (the same `python -m segda train` command "
            "resumes a run) and run the ledger again.",
            "",
        ]
    lines += [
        "| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean +/- std |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    labels = {"last": "last iterate (segda's number)",
              "best": "best snapshot on target val (the papers' rule; uses target labels)"}
    for kind in ("last", "best"):
        part = table[table["row"] == kind].set_index("seed")
        cells = [f"{part.loc[str(s), 'miou']:.2f} ({part.loc[str(s), 'snapshot']}, "
                 f"{_held(int(part.loc[str(s), 'updates']), kind == 'last' and s in unfinished, cfg)}"
                 f" = official {part.loc[str(s), 'official']})" for s in seeds]
        mean, std = part.loc["mean", "miou"], part.loc["std", "miou"]
        spread = f"{mean:.2f} +/- {std:.2f}" if not math.isnan(std) else f"{mean:.2f}"
        lines.append(f"| {labels[kind]} | " + " | ".join(cells) + f" | {spread} |")
    paper = table[table["row"] == "papers"]
    if len(paper):
        p = paper.iloc[0]
        lines.append(f"| the papers' number ({p['official']}) | " + " | " * len(seeds)
                     + f"{p['miou']:.1f} |")
    else:
        lines.append("| the papers' number | " + " | " * len(seeds) + "- (no such row) |")
    return "\n".join(lines)


def ledger(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    max_images: int | None = None,
    device: str = "auto",
    overrides: dict | None = None,
) -> str:
    """Evaluate every kept snapshot of the runs under ``paths``, write the ledger files into
    ``out`` (default: the runs' common folder) and return the Markdown."""
    import os

    import pandas as pd

    repro.check_device(device, "--device")  # before any snapshot is evaluated
    if out is not None:
        runs.check_run_dir(out, "--out")
    wrong = [k for k in overrides or {} if not k.startswith("data.")]
    if wrong:  # the snapshots are evaluated as their runs were: only the data can move
        raise config.ConfigError(f"--set {wrong[0]}: ledger takes data.* keys only (where the "
                                 "validation split is read, e.g. --set data.root=DIR)")
    run_dirs = find_runs(paths)
    out = Path(out) if out is not None else Path(os.path.commonpath(
        [str(p.resolve().parent) for p in run_dirs]))
    out.mkdir(parents=True, exist_ok=True)
    previous = pd.read_csv(out / SNAPSHOTS_CSV) if (out / SNAPSHOTS_CSV).exists() else None
    snaps = evaluate_snapshots(run_dirs, max_images=max_images, device=device,
                               overrides=overrides, previous=previous)
    tables, texts = [], [
        "# Snapshot ledger",
        "",
        "segda's `iter_N.pth` holds N updates; the official `model_i.pth` (ADVENT) / "
        "`GTA5_i.pth` (AdaptSegNet) holds i + 1, except AdaptSegNet's final "
        "`GTA5_<NUM_STEPS_STOP>.pth`. Each snapshot is named by the official file with the "
        "same number of updates. The best snapshot is chosen on the target validation split, "
        "with its labels, as the papers did; the last iterate is what segda reports.",
    ]
    groups = run_sets(run_dirs)
    for group, name in zip(groups, set_names(groups), strict=True):
        cfg = runs.read_config(group[0])
        part = snaps[snaps["run"].isin([str(p) for p in group])]
        table = summarize_set(part, name, cfg)
        tables.append(table)
        texts += ["", format_set(table, part, name, cfg)]
    text = "\n".join(texts) + "\n"
    snaps.to_csv(out / SNAPSHOTS_CSV, index=False)
    pd.concat(tables, ignore_index=True).to_csv(out / TABLE_CSV, index=False)
    (out / TABLE_MD).write_text(text)
    return text
