"""When a method's gain arrives: a run trained in chunks, its model scored on the target
between chunks.

A run is trained to iteration ``every``, then ``2 * every`` and so on, each time resumed from
its own ``last.pth`` (:func:`segda.train.fit` with ``stop_at``; a resume is exact, so the
finished run equals one trained without stopping, bit for bit, and keeps its config). After
each chunk the model is scored on the first ``images`` target validation images: mIoU and the
mean normalised entropy of its predictions. The curve is written beside the run
(``target_curve.csv``) and read back when the run is reused.

The curve reads target labels, as the final evaluation does; it is a view of the run, never
fed back into it (no snapshot is chosen by it).
"""

from __future__ import annotations

from pathlib import Path

from segda import evaluate, io, runs, train
from segda.config import TrainConfig

FILE = "target_curve.csv"
COLUMNS = ("iteration", "target_miou", "target_entropy", "images")


def read(run_dir: str | Path | None):
    """The curve stored in ``run_dir`` (a DataFrame with :data:`COLUMNS`), or ``None``."""
    import pandas as pd

    if run_dir is None or not (Path(run_dir) / FILE).is_file():
        return None
    return pd.read_csv(Path(run_dir) / FILE)


def point(seg, data, predictor: evaluate.Predictor, iteration: int, images: int) -> dict:
    """One point of a curve: target mIoU (%) and mean normalised entropy of ``seg`` on the
    first ``images`` target validation images."""
    n = min(images, len(data.val_target))
    miou = evaluate.evaluate(seg, data.val_target, predictor, max_images=n).miou
    entropy = evaluate.mean_entropy(seg, data.val_target, predictor, max_images=n)
    return {"iteration": iteration, "target_miou": 100 * miou, "target_entropy": entropy,
            "images": n}


def train_with_curve(run_dir: str | Path, cfg: TrainConfig, data, every: int = 50,
                     images: int = 100, progress_bar: str | None = None):
    """Train ``cfg`` into ``run_dir`` in chunks of ``every`` iterations, scoring the model
    after each (and the starting model), and return ``(RunResult, curve)``.

    A finished run in ``run_dir`` is reused as :func:`segda.train.ensure_run` reuses it, with
    the curve stored beside it (``None`` when it was trained without one). A run stopped half
    way resumes; the points before its checkpoint are then missing from the curve."""
    import pandas as pd

    run_dir = Path(run_dir)
    if every < 1 or images < 1:
        raise ValueError(f"every and images must be at least 1, got {every} and {images}")
    runs.check_config(run_dir, cfg)
    if runs.is_complete(run_dir, cfg):
        return train.ensure_run(run_dir, cfg, data=data, progress_bar=progress_bar), read(run_dir)
    predictor = evaluate.Predictor.from_config(cfg)
    points = []
    for stop in range(0, cfg.optim.early_stop, every):
        # a resumed run starts at its checkpoint: the stops before it score that checkpoint
        result = train.fit(cfg, run_dir, data=data, stop_at=stop, progress_bar=progress_bar)
        points.append(point(result.seg, data, predictor, result.state.iteration, images))
    result = train.ensure_run(run_dir, cfg, data=data, progress_bar=progress_bar)
    points.append(point(result.seg, data, predictor, result.state.iteration, images))
    curve = pd.DataFrame(points, columns=list(COLUMNS)).drop_duplicates("iteration")
    io.write_text_atomic(run_dir / FILE, curve.to_csv(index=False))
    return result, curve

