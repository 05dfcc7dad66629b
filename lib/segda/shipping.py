"""Making and checking the shipped source-only checkpoint (:mod:`segda.shipped` loads it).

``python -m segda ship`` trains ``embedded/source_pretrain`` (seed 0), writes its segmenter's
weights into the package (``shipped_weights/<name>.pth``) and records them in the manifest:
SHA-256, the command, the scores and the losses of the first iterations (:func:`make_shipped`).
``--check`` regenerates those losses (:func:`first_losses`), which checks the recipe, the data
and the code behind the file; ``--rescore`` re-evaluates the unchanged file
(:func:`rescore_shipped`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from segda import checkpointing, evaluate, io, rows, runs, shipped, starts, train
from segda.data import registry

SHIP_COMMAND = "python -m segda ship --run-dir runs/shipped/source_pretrain"
FINGERPRINT_ITERATIONS = 5
# Regenerated losses must agree to this relative tolerance: other CPUs' kernels round
# differently, far below it, while a changed recipe, datum or initialisation moves them by more.
FINGERPRINT_RTOL = 1e-3


def first_losses(seed: int = 0, iterations: int = FINGERPRINT_ITERATIONS, data=None) -> list[dict]:
    """The loss terms of the first ``iterations`` of ``embedded/source_pretrain`` (seed
    ``seed``), one entry per iteration: what the shipped checkpoint's training began with, so
    that regenerating them checks the recipe, the data and the code behind the file."""
    cfg = starts.run_config("embedded/source_pretrain", seed, {"run.log_every": 1})
    result = train.fit(cfg, None, data=data, stop_at=iterations, progress_bar="none")
    return result.state.history[:iterations]


def make_shipped(run_dir: str | Path, seed: int = 0, name: str = shipped.EMBEDDED_PRETRAINED,
                 folder: Path = shipped.FOLDER, progress_bar: str | None = None) -> dict:
    """Train ``embedded/source_pretrain`` (seed ``seed``) into ``run_dir`` (reused when
    finished), write its segmenter's weights to ``folder/<name>.pth`` and record them in
    ``folder/manifest.json``: SHA-256, the command, the scores and the first iterations'
    losses. Returns the manifest's record."""
    cfg = starts.run_config("embedded/source_pretrain", seed)
    if runs.holds_run(run_dir) and runs.read_config(run_dir) not in (None, cfg):
        # ship has no --retrain: the way on is another folder
        raise runs.ConfigMismatchError(
            f"{run_dir} holds a run of another config than ship's (embedded/source_pretrain, "
            f"seed {seed}: {runs.diff(runs.read_config(run_dir).to_dict(), cfg.to_dict())}); "
            "give ship another --run-dir, or delete that folder")
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
    io.write_text_atomic(Path(folder) / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return record


def rescore_shipped(name: str = shipped.EMBEDDED_PRETRAINED, folder: Path = shipped.FOLDER) -> dict:
    """Re-evaluate the shipped checkpoint, unchanged, on the validation splits its preset
    renders now (a changed target domain changes its target score, not its weights: the
    source side and the training are the same) and record the scores in the manifest."""
    record = shipped.entry(name)
    cfg = starts.run_config("embedded/source_pretrain", record["seed"])
    data = registry.build_datasets(cfg.data, cfg.model)
    seg = checkpointing.shipped_segmenter(cfg, name)
    predictor = evaluate.Predictor.from_config(cfg)
    record = {**record,
              "target_miou": evaluate.evaluate(seg, data.val_target, predictor).miou,
              "source_miou": evaluate.evaluate(seg, data.val_source, predictor).miou,
              "balance_shift": cfg.data.balance_shift}
    manifest = shipped.read_manifest(Path(folder) / "manifest.json")
    manifest[name] = record
    io.write_text_atomic(Path(folder) / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return record


def first_losses_drift(record: dict) -> float:
    """The largest relative difference between a shipped checkpoint's recorded first losses
    (its manifest ``record``) and the same iterations regenerated now; below
    :data:`FINGERPRINT_RTOL` the recipe still makes the same checkpoint."""
    again = first_losses(record["seed"], len(record["first_losses"]))
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12)
               for a, b in zip(again, record["first_losses"], strict=True) for k in b)


def ship_run(run_dir: str | Path, folder: Path = shipped.FOLDER) -> dict:
    """Ship a finished run whole: copy ``run_dir``'s run files (:data:`segda.shipped.RUN_FILES`)
    into ``folder/<name>/``, ``<name>`` being the shipped run of its preset
    (:data:`segda.shipped.SHIPPED_RUNS`: the embedded oracle), and record their SHA-256, the
    command, the run's settings and scores in the manifest. Returns the manifest's record."""
    run_dir = Path(run_dir)
    cfg = runs.read_config(run_dir)
    if cfg is None or not runs.is_complete(run_dir, cfg):
        raise runs.RunFileError(f"{run_dir} holds no finished run; train it first (notebook 01 "
                                "at its defaults trains the oracle into runs/notebooks/seed0/oracle)")
    preset = rows.preset_of(rows.row_of(cfg), "embedded")
    if cfg.data.dataset != "embedded" or preset not in shipped.SHIPPED_RUNS:
        raise runs.RunFileError(
            f"{run_dir} is a run of {preset} on {cfg.data.dataset!r}; only these embedded rows "
            f"ship as whole runs: {sorted(shipped.SHIPPED_RUNS)}")
    name = shipped.SHIPPED_RUNS[preset]
    target = Path(folder) / name
    digests = {}
    for file in shipped.RUN_FILES:
        digests[file] = io.sha256_bytes(io.copy_atomic(run_dir / file, target / file))
    metrics = runs.read_metrics(run_dir)
    final = metrics["evals"][-1]
    record = {
        "folder": name, "sha256": digests, "command": f"python -m segda ship --run {run_dir}",
        "preset": preset, "seed": cfg.run.seed, "iterations": metrics["iteration"],
        "model": cfg.model.name, "image_size": list(cfg.data.source_size),
        "target_miou": final.get("target_miou"), "source_miou": final.get("source_miou"),
        "torch": metrics.get("environment", {}).get("torch"),
        "cpu": metrics.get("environment", {}).get("cpu"),
    }
    manifest = shipped.read_manifest(Path(folder) / "manifest.json")
    manifest[name] = record
    io.write_text_atomic(Path(folder) / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return record


def describe_shipped_run(record: dict) -> str:
    """What ``python -m segda ship --run`` prints of the run it shipped."""
    return (f"wrote {shipped.FOLDER / record['folder']} ({record['preset']}, seed "
            f"{record['seed']}, {record['iterations']} iterations; target mIoU "
            f"{100 * record['target_miou']:.1f}); a notebook row of exactly this config now "
            "copies it instead of training it")


def describe_rescore(record: dict) -> str:
    """What ``python -m segda ship --rescore`` prints of the file it re-evaluated."""
    return (f"{shipped.resolve(shipped.reference())} (SHA-256 {record['sha256']}, unchanged) "
            f"re-evaluated: target mIoU {100 * record['target_miou']:.1f}, "
            f"source mIoU {100 * record['source_miou']:.1f} (balance_shift "
            f"{record['balance_shift']:g})")
