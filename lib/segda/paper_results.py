"""The papers' GTA5 -> Cityscapes results (mIoU %, Cityscapes val, 19 classes).

These are the *papers'* numbers, restated for comparison tables; segda's own results are never
mixed into this table. Where the values come from and how sure they are is given per row:
"paper" = the mIoU as printed in the paper and confirmed by its authors in their issue
tracker; "secondary" = copied from third-party tables that agree with the paper's mIoU;
"unconfirmed" = recalled or from a single secondary source. Per-class rows are in the papers'
column order (road ... bicycle).

Sources: Tsai et al., "Learning to Adapt Structured Output Space for Semantic Segmentation",
CVPR 2018 (AdaptSegNet), Table 1 / 2; Vu et al., "ADVENT: Adversarial Entropy Minimization for
Domain Adaptation in Semantic Segmentation", CVPR 2019, Table 1; oracle 65.1 stated by the
AdaptSegNet authors (wasidennis/AdaptSegNet#51).
"""

from __future__ import annotations

# (backbone, method) -> (mIoU, per-class or None, confidence, where from)
GTA5_CITYSCAPES: dict[tuple[str, str], tuple[float, tuple[float, ...] | None, str, str]] = {
    ("resnet101", "source_only"): (36.6, (
        75.8, 16.8, 77.2, 12.5, 21.0, 25.5, 30.1, 20.1, 81.3, 24.6, 70.3, 53.8, 26.4, 49.9,
        17.2, 25.9, 6.5, 25.3, 36.0), "secondary", "AdaptSegNet, baseline"),
    ("resnet101", "feature_adv"): (39.3, None, "unconfirmed", "AdaptSegNet, feature adaptation"),
    ("resnet101", "output_adv_single"): (41.4, None, "paper", "AdaptSegNet single-level"),
    ("resnet101", "output_adv_multi"): (42.4, (
        86.5, 36.0, 79.9, 23.4, 23.3, 23.9, 35.2, 14.8, 83.4, 33.3, 75.6, 58.5, 27.6, 73.7,
        32.5, 35.4, 3.9, 30.1, 28.1), "secondary", "AdaptSegNet multi-level"),
    ("resnet101", "minent"): (42.3, (
        84.4, 18.7, 80.6, 23.8, 23.2, 28.4, 36.9, 23.4, 83.2, 25.2, 79.4, 59.0, 29.9, 78.5,
        33.7, 29.6, 1.7, 29.9, 33.6), "unconfirmed", "ADVENT MinEnt"),
    ("resnet101", "advent"): (43.8, (
        89.9, 36.5, 81.6, 29.2, 25.2, 28.5, 32.3, 22.4, 83.9, 34.0, 77.1, 57.4, 27.9, 83.7,
        29.4, 39.1, 1.5, 28.4, 23.3), "secondary", "ADVENT AdvEnt"),
    ("resnet101", "advent+minent"): (45.5, (
        89.4, 33.1, 81.0, 26.6, 26.8, 27.2, 33.5, 24.7, 83.9, 36.7, 78.8, 58.7, 30.5, 84.8,
        38.5, 44.5, 1.7, 31.6, 32.4), "secondary", "ADVENT AdvEnt + MinEnt(+ER) ensemble"),
    ("resnet101", "oracle"): (65.1, None, "secondary", "target-trained oracle"),
    ("vgg16", "output_adv_single"): (35.0, None, "paper", "AdaptSegNet single-level, VGG-16"),
    ("vgg16", "minent"): (32.8, None, "secondary", "ADVENT MinEnt, VGG-16"),
    ("vgg16", "advent"): (36.1, None, "secondary", "ADVENT AdvEnt, VGG-16"),
}


def table():
    """A DataFrame of the rows above (mIoU only), labelled as the papers' numbers."""
    import pandas as pd

    rows = [
        {"backbone": b, "method": m, "paper mIoU": v[0], "confidence": v[2], "row": v[3]}
        for (b, m), v in GTA5_CITYSCAPES.items()
    ]
    return pd.DataFrame(rows)
