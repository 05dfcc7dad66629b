"""segda's IoU against cityscapesscripts' pixel-level evaluation on miniature Cityscapes data.

Ground truth is written as ``*_gtFine_labelIds.png`` (label ids, including ids that are ignored
in evaluation), predictions as label-id PNGs, as cityscapesscripts expects. segda maps the
ground truth to train ids and accumulates :class:`segda.metrics.ConfusionMatrix`;
cityscapesscripts' ``evalPixelLevelSemanticLabeling`` is run on the files with its ``args``
configured here (no JSON, no instance scores, paths in tmp_path). Its "average class IoU" is
the mean over the 19 evaluated classes that are not NaN; NaN means the class is absent from the
ground truth and never predicted on evaluated pixels, the same rule as the official
``np.nanmean``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segda.labels import CLASS_NAMES, LABEL_ID_TO_TRAIN_ID, NUM_CLASSES, label_id_lut
from segda.metrics import ConfusionMatrix

ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
from cityscapesscripts.helpers.labels import trainId2label  # noqa: E402

H, W = 24, 40
CITY = "frankfurt"
ABSENT = 16  # train: never in GT, never predicted -> NaN in both
PREDICTED_ONLY = 15  # bus: never in GT but predicted -> IoU 0 in both


def make_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Label-id ground truth and a train-id prediction (a noisy copy of it)."""
    eval_ids = [i for i, t in LABEL_ID_TO_TRAIN_ID.items() if t not in (ABSENT, PREDICTED_ONLY)]
    ignored = [0, 1, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30]  # ignoreInEval label ids
    gt = rng.choice(eval_ids + ignored, size=(H, W))
    train = label_id_lut()[gt].astype(np.int64)
    pred = np.where(train == 255, rng.integers(0, NUM_CLASSES, (H, W)), train)
    noise = rng.random((H, W)) < 0.3
    pred[noise] = rng.integers(0, NUM_CLASSES, int(noise.sum()))
    pred[pred == ABSENT] = 0
    return gt, pred


def write_dataset(root: Path, n: int = 3) -> tuple[list[Path], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = root / "gtFine" / "val" / CITY, root / "results"
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir()
    to_label_id = np.zeros(256, dtype=np.uint8)
    for t in range(NUM_CLASSES):
        to_label_id[t] = trainId2label[t].id
    gts, preds = [], []
    for k in range(n):
        gt, pred = make_pair(rng)
        stem = f"{CITY}_000000_{k:06d}"
        Image.fromarray(gt.astype(np.uint8), mode="L").save(gt_dir / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(to_label_id[pred], mode="L").save(pred_dir / f"{stem}_pred.png")
        gts.append(gt_dir / f"{stem}_gtFine_labelIds.png")
        preds.append(pred)
    return gts, preds


def cityscapes_scripts_eval(root: Path, gt_files: list[Path]) -> dict:
    args = copy.copy(ev.args)  # the module's own settings object, copied and redirected
    args.cityscapesPath = str(root)
    args.predictionPath = str(root / "results")
    args.predictionWalk = None
    args.groundTruthSearch = str(root / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png")
    args.exportFile = str(root / "evaluationResults" / "result.json")
    args.evalInstLevelScore = False  # needs *_instanceIds.png; not part of the IoU
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    preds = [ev.getPrediction(args, str(g)) for g in gt_files]  # its own file matching
    return ev.evaluateImgLists(preds, [str(g) for g in gt_files], args)


def test_miou_agrees_with_cityscapesscripts(tmp_path):
    gt_files, preds = write_dataset(tmp_path)
    cm = ConfusionMatrix(NUM_CLASSES)
    for path, pred in zip(gt_files, preds, strict=True):
        gt_train = label_id_lut()[np.asarray(Image.open(path))]
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt_train.astype(np.int64)))
    ours = cm.iou()
    theirs = cityscapes_scripts_eval(tmp_path, gt_files)
    assert not (tmp_path / "evaluationResults").exists()  # no JSON written

    for t in range(NUM_CLASSES):
        name = trainId2label[t].name
        assert name == CLASS_NAMES[t] or (t == 6 and name == "traffic light") or (
            t == 7 and name == "traffic sign")
        a, b = ours[t], theirs["classScores"][name]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12), name
    assert math.isnan(ours[ABSENT]) and math.isnan(theirs["classScores"]["train"])
    assert ours[PREDICTED_ONLY] == 0.0 == theirs["classScores"]["bus"]
    # ignored classes (e.g. caravan) are NaN in its table and take no part in the average
    assert math.isnan(theirs["classScores"]["caravan"])
    assert cm.miou() == pytest.approx(theirs["averageScoreClasses"], abs=1e-12)
    assert cm.miou() == pytest.approx(np.nanmean(ours), abs=1e-12)
    assert 0.3 < cm.miou() < 0.95  # a non-trivial case


def test_predictions_on_ignored_pixels_count_nowhere(tmp_path):
    """A wrong prediction on an ignored ground-truth pixel is no false positive in either."""
    gt_files, preds = write_dataset(tmp_path, n=1)
    gt = np.asarray(Image.open(gt_files[0]))
    before = cityscapes_scripts_eval(tmp_path, gt_files)["classScores"]["road"]
    ignored = label_id_lut()[gt] == 255
    pred = preds[0].copy()
    pred[ignored] = 0  # road everywhere the ground truth is ignored
    to_label_id = np.array([trainId2label[t].id for t in range(NUM_CLASSES)], dtype=np.uint8)
    stem = gt_files[0].name.replace("_gtFine_labelIds.png", "")
    Image.fromarray(to_label_id[pred], mode="L").save(tmp_path / "results" / f"{stem}_pred.png")
    after = cityscapes_scripts_eval(tmp_path, gt_files)["classScores"]["road"]
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(torch.from_numpy(pred), torch.from_numpy(label_id_lut()[gt].astype(np.int64)))
    assert after == pytest.approx(before, abs=1e-12) == pytest.approx(cm.iou()[0], abs=1e-12)
