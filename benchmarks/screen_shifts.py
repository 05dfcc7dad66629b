"""Screen settings of the embedded target's shift: the shipped source-only checkpoint on each
setting's target validation images, as shipped and with AdaBN (its batch-norm statistics
re-estimated on 200 target training images; no training). A setting whose AdaBN gain is a
small part of what source-only lost is a candidate for the full rows (``python -m segda suite
--seeds 0 --no-studies`` with the setting in ``--pretrain-set`` and ``--adapt-set``).

    python benchmarks/screen_shifts.py "palette_shift=0 light_shift=0 condition_shift=0.5 class_confusion=1"

Each argument is one setting: ``data.<key>=<value>`` pairs separated by spaces; unnamed knobs
keep the defaults of :class:`segda.config.DataConfig`. docs/embedded_benchmark.md, "The gap's
shape", has the screen that chose the default.
"""

from __future__ import annotations

import argparse
import time

import torch

from segda import adabn, checkpointing, config, evaluate
from segda.data import registry


def screen(setting: dict[str, float], adabn_images: int = 200) -> tuple[float, float]:
    """(shipped, shipped + AdaBN) target mIoU (%) for one setting of the data config."""
    cfg = config.load("embedded/source_only", {f"data.{k}": v for k, v in setting.items()})
    data = registry.build_datasets(cfg.data, cfg.model)
    seg = checkpointing.shipped_segmenter(cfg)
    predictor = evaluate.Predictor.from_config(cfg)
    plain = evaluate.evaluate(seg, data.val_target, predictor).miou
    stats = adabn.adapt_batch_norm(seg, data.train_target, max_images=adabn_images)
    return 100 * plain, 100 * evaluate.evaluate(stats, data.val_target, predictor).miou


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("settings", nargs="+", help='e.g. "condition_shift=0.5 class_confusion=1"')
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| setting | shipped source-only | + AdaBN | AdaBN's gain |\n|---|---|---|---|")
    for text in args.settings:
        setting = {k: float(v) for k, v in (kv.split("=") for kv in text.split())}
        t = time.perf_counter()
        plain, stats = screen(setting)
        print(f"| {text} | {plain:.1f} | {stats:.1f} | {stats - plain:+.1f} |"
              f" <!-- {time.perf_counter() - t:.0f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
