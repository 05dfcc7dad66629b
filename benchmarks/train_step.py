"""Time one training iteration of each method: reference mode vs fast mode, same run.

Reference mode does the official iteration's work: fp32, eager, the official masked-indexing
cross-entropy, the official order of passes. Fast mode: cross-entropy with ``ignore_index``,
plus bf16 autocast and channels_last when asked. Both run on identical weights and inputs, in
the same process, on the same device, so the ratio is meaningful; absolute times are not
comparable across machines.

CPU (default): the small model at the embedded size (64x128, batch 8 per domain).
GPU: DeepLab-v2 ResNet-101 at the papers' sizes (source 1280x720, target 1024x512, batch 1).

    python benchmarks/train_step.py --device cpu
    python benchmarks/train_step.py --device cuda --amp --channels-last
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from segda import config, repro, train

METHOD_ROWS = [
    ("source_only", "multi"), ("feature_adv", "single"), ("output_adv", "single"),
    ("output_adv", "multi"), ("minent", "multi"), ("advent", "multi"),
]


def make_config(args, method: str, levels: str, fast: bool) -> config.TrainConfig:
    over = {
        "model.name": args.model, "model.multi_level": True, "model.bn_mode": "train",
        "method.name": method, "method.levels": levels,
        "data.source_size": list(args.source_size), "data.target_size": list(args.target_size),
        "data.batch_size": args.batch_size,
        "optim.optimizer": "sgd", "optim.param_groups": "official",
        "run.device": args.device, "run.progress": False,
        "run.ce_impl": "ignore_index" if fast else "masked",
        "run.amp": bool(fast and args.amp), "run.channels_last": bool(fast and args.channels_last),
    }
    return config.load(None, over)


def make_batches(cfg, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    (ws, hs), (wt, ht) = cfg.data.source_size, cfg.data.target_size
    n = cfg.data.batch_size
    label = torch.randint(0, cfg.model.num_classes, (n, hs, ws), generator=g)
    label[:, : hs // 10] = 255  # some ignored pixels, as in real labels
    fmt = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    src = train.Batch(torch.randn(n, 3, hs, ws, generator=g).to(device, memory_format=fmt),
                      label.to(device))
    tgt = train.Batch(torch.randn(n, 3, ht, wt, generator=g).to(device, memory_format=fmt))
    return src, tgt


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_mode(args, method, levels, fast, init_state=None):
    device = repro.resolve_device(args.device)
    cfg = make_config(args, method, levels, fast)
    torch.manual_seed(0)
    state = train.build_state(cfg, device)
    if init_state is not None:
        state.seg.load_state_dict(init_state)
    state.seg.train()
    src, tgt = make_batches(cfg, device)
    for _ in range(args.warmup):
        train.train_step(state, src, tgt, cfg)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        logged = train.train_step(state, src, tgt, cfg)
        float(logged["seg_main"])  # the loop logs losses, which synchronises
        sync(device)
        times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return statistics.median(times) * 1000, peak, state


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None)
    p.add_argument("--source-size", type=int, nargs=2, default=None, metavar=("W", "H"))
    p.add_argument("--target-size", type=int, nargs=2, default=None, metavar=("W", "H"))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--amp", action="store_true", help="bf16 autocast in the fast mode")
    p.add_argument("--channels-last", action="store_true", help="channels_last in the fast mode")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--methods", nargs="*", default=None, help="e.g. advent:multi minent:multi")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.model = args.model or ("deeplabv2_resnet101" if gpu else "small")
    args.source_size = args.source_size or ((1280, 720) if gpu else (128, 64))
    args.target_size = args.target_size or ((1024, 512) if gpu else (128, 64))
    args.batch_size = args.batch_size or (1 if gpu else 8)
    rows = [tuple(m.split(":")) for m in args.methods] if args.methods else METHOD_ROWS
    env = repro.environment()
    print(f"# {args.model}, source {args.source_size}, target {args.target_size}, "
          f"batch {args.batch_size}, device {args.device} "
          f"({env.get('gpu', env['platform'])}), torch {env['torch']}, "
          f"{env['cpu_threads']} CPU threads; fast = ignore_index CE"
          f"{' + bf16' if args.amp else ''}{' + channels_last' if args.channels_last else ''}")
    mem = "peak GiB (CUDA allocated)" if gpu else "peak RSS GiB (process)"
    print(f"| method | levels | reference ms/it | fast ms/it | speed-up | {mem} ref / fast |")
    print("|---|---|---|---|---|---|")
    for method, levels in rows:
        ref_ms, ref_mem, state = time_mode(args, method, levels, fast=False)
        fast_ms, fast_mem, _ = time_mode(args, method, levels, fast=True)
        print(f"| {method} | {levels} | {ref_ms:.1f} | {fast_ms:.1f} | x{ref_ms / fast_ms:.2f} "
              f"| {ref_mem:.2f} / {fast_mem:.2f} |", flush=True)


if __name__ == "__main__":
    main()
