"""Checkpoint files evaluated (``python -m segda eval``): one checkpoint or an ensemble, each
predicted as its run was evaluated, on a validation split; the per-class tables written
beside the checkpoint (or into ``out``), named by everything that changes them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segda import checkpointing, evaluate, repro, shipped
from segda.data import registry


def evaluate_files(checkpoints: Sequence[str | Path], out: str | Path | None = None, *,
                   model: str = "deeplabv2_resnet101", aspp_branches: int | None = None,
                   device: str = "auto", weights: Sequence[float] | None = None,
                   combine: str = "logits", dataset: str | None = None, root: str | None = None,
                   max_images: int | None = None, num_classes: int = 19) -> str:
    """Evaluate ``checkpoints`` (several: an ensemble, ``weights`` and ``combine`` as
    :class:`segda.evaluate.Predictor` takes them) on the target validation split of the first
    one's dataset (or ``dataset`` under ``root``); write ``<stem>.md`` and ``.csv`` and return
    the table with the predictor and the files written. ``model`` and ``aspp_branches``: the
    architecture of official files (run checkpoints carry theirs)."""
    repro.check_device(device, "--device")  # before any file is read
    # "shipped:<name>", as model.init_checkpoint takes it: the verified file
    paths = [shipped.resolve(p) if shipped.is_shipped(p) else Path(p) for p in checkpoints]
    twice = [p for i, p in enumerate(paths) if p.resolve() in [q.resolve() for q in paths[:i]]]
    if twice:  # an "ensemble" of a model with itself would report the model's own score
        raise evaluate.EvaluationError(f"--checkpoint names {twice[0]} twice; give each member of "
                                       "an ensemble once (its --weights set its share)")
    weights = evaluate.ensemble_weights(weights, len(paths))
    out_dir = evaluate.tables_folder(Path(out) if out else paths[0].parent)
    loaded = [checkpointing.segmenter_of_file(p, model, aspp_branches) for p in paths]
    for path, (_, cfg) in zip(paths, loaded, strict=True):
        evaluate.require_cityscapes_classes(cfg.model.num_classes, path)
    predictor = evaluate.Predictor.for_runs([c for _, c in loaded], [str(p) for p in paths],
                                            device, weights=weights, combine=combine)
    base = loaded[0][1]
    overrides = {"data.dataset": dataset or base.data.dataset}
    if root:
        overrides["data.root"] = root
    data_cfg = base.replace(overrides)
    data = registry.build_datasets(data_cfg.data, data_cfg.model)
    res = evaluate.evaluate([m for m, _ in loaded], data.val_target, predictor,
                            max_images=max_images)
    stem = evaluate.tables_stem(paths, weights, data_cfg.data.dataset, beside=not out,
                                combine=combine, root=root, max_images=max_images,
                                num_classes=num_classes)
    table = evaluate.write_tables(out_dir, stem, "+".join(p.stem for p in paths), res.iou,
                                  num_classes)
    return (f"{table}\npredicted with {predictor.describe()}\n"
            f"wrote {out_dir / stem}.md and .csv")
