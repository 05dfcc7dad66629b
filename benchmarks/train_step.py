"""Time one training iteration: reference mode vs fast mode, each switch's share, evaluation.

Reference mode does the official iteration's work: fp32, eager, the official masked-indexing
cross-entropy, the reference optimizers, the official order of passes. The fast-mode switches
are listed in :mod:`segda.fastpath`. Every row starts from identical weights and inputs, in the
same process on the same device, so ratios are meaningful; absolute times are not comparable
across machines. Each row also reports how far its first iteration's losses are from the
reference's (relative), so a faster row that computes something else is visible.

Tables (Markdown on stdout; ``--out`` appends them to a file):

* default: each method (``--methods``) in reference and in fast mode;
* ``--ablate``: the first method, from the reference adding one switch at a time
  (cross-entropy, bf16, channels_last, fused optimizers, compile, CUDA graphs);
* ``--eval``: evaluation at the papers' protocol (1024x512 in, logits upsampled to 2048x1024
  with ``align_corners=True``, argmax, confusion matrix on the device), ms per image.

CPU (default): the small model at 64x128, batch 8 per domain, each row starting from its
embedded preset (``embedded/advent`` ...: Adam, the embedded discriminator width), i.e. the step
the notebooks run. GPU: DeepLab-v2 ResNet-101 at the papers' sizes (source 1280x720, target
1024x512, batch 1).

Every per-method row also counts the step's floating-point operations (convolutions and matrix
products, forward and backward, by ``torch.utils.flop_counter``) and reports the achieved
GFLOP/s beside the machine's fp32 matrix-product throughput measured in the same run at the
same thread count (a 2048x2048 ``matmul``): the physical limit a step can approach.

    python benchmarks/train_step.py --device cpu
    python benchmarks/train_step.py --device cuda --ablate --methods advent:multi
    python benchmarks/train_step.py --device cuda --eval
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import sys
import time

import report  # benchmarks/report.py (scripts run as python benchmarks/<name>.py)
import torch

from segda import config, evaluate, methods, models, repro, step
from segda.metrics import ConfusionMatrix

METHOD_ROWS = [
    ("source_only", "multi"), ("feature_adv", "single"), ("output_adv", "single"),
    ("output_adv", "multi"), ("minent", "multi"), ("advent", "multi"),
]
REFERENCE = {"run.ce_impl": "masked", "run.amp": False, "run.channels_last": False,
             "run.optim_impl": "reference", "run.compile": "none", "run.cuda_graphs": False}
# The ablation: each row adds one switch to the row above.
ABLATION = [
    ("reference (fp32, eager, masked CE)", {}),
    ("+ cross-entropy with ignore_index", {"run.ce_impl": "ignore_index"}),
    ("+ bf16 autocast", {"run.amp": True}),
    ("+ channels_last", {"run.channels_last": True}),
    ("+ fused optimizers", {"run.optim_impl": "fused"}),
    ("+ torch.compile of the step's stages", {"run.compile": "default"}),
    ("+ CUDA graphs", {"run.cuda_graphs": True}),
]
# The embedded preset each CPU row starts from (the step the notebooks run).
EMBEDDED_PRESETS = {("source_only", "multi"): "source_only", ("feature_adv", "single"): "feature_adv",
                    ("output_adv", "single"): "output_adv_single",
                    ("output_adv", "multi"): "output_adv_multi", ("minent", "multi"): "minent",
                    ("advent", "multi"): "advent", ("advent", "single"): "advent",
                    ("minent", "single"): "minent", ("source_only", "single"): "source_only"}
COMPILE_COST_S = 150  # a rough upper bound of one compiled row's compile time (ResNet-101, GPU)


def fast_switches(args) -> dict:
    over = {"run.ce_impl": "ignore_index", "run.amp": not args.no_amp, "run.channels_last": True,
            "run.optim_impl": "fused"}
    if args.fast_compile != "none":
        over["run.compile"] = args.fast_compile
        over["run.cuda_graphs"] = bool(args.cuda_graphs)
    return over


def make_config(args, method: str, levels: str, switches: dict) -> config.TrainConfig:
    over = {
        "model.name": args.model, "model.multi_level": True, "model.bn_mode": "train",
        "method.name": method, "method.levels": levels,
        "data.source_size": list(args.source_size), "data.target_size": list(args.target_size),
        "data.batch_size": args.batch_size,
        "optim.optimizer": "sgd", "optim.param_groups": "official",
        "run.device": args.device, "run.progress": False,
        **REFERENCE, "run.compile_backend": args.compile_backend, **switches,
    }
    preset = None
    if args.device == "cpu":
        preset = f"embedded/{EMBEDDED_PRESETS.get((method, levels), 'source_only')}"
        for key in ("optim.optimizer", "optim.param_groups", "model.name"):
            over.pop(key)  # the preset's (Adam, unique listing, the small model)
        over["model.name"] = args.model
    return config.load(preset, over)


def step_gflop(cfg, device) -> float:
    """Floating-point operations of one training step (forward and backward of every
    convolution and matrix product), in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    state = step.build_state(cfg, device)
    state.seg.train()
    src, tgt = make_batches(cfg, device)
    counter = FlopCounterMode(display=False)
    with counter:
        step.train_step(state, src, tgt, cfg)
    return counter.get_total_flops() / 1e9


def matmul_gflops(device, n: int = 2048, reps: int = 8) -> float:
    """Measured fp32 throughput of an n x n matrix product on ``device``, GFLOP/s."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device) for _ in range(2))
    ms = median_ms(lambda: a @ b, 2, reps, device)
    return 2 * n**3 / (ms / 1000) / 1e9


def make_batches(cfg, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    (ws, hs), (wt, ht) = cfg.data.source_size, cfg.data.target_size
    n = cfg.data.batch_size
    label = torch.randint(0, cfg.model.num_classes, (n, hs, ws), generator=g)
    label[:, : hs // 10] = 255  # some ignored pixels, as in real labels
    fmt = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    src = methods.Batch(torch.randn(n, 3, hs, ws, generator=g).to(device, memory_format=fmt),
                      label.to(device))
    tgt = methods.Batch(torch.randn(n, 3, ht, wt, generator=g).to(device, memory_format=fmt))
    return src, tgt


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def median_ms(fn, warmup: int, iters: int, device) -> float:
    """Median milliseconds of ``fn()`` over ``iters`` synchronised calls after ``warmup`` calls;
    the peak-memory counter restarts after the warm-up (compilation is not counted)."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def time_training(args, method, levels, switches):
    """Median ms per iteration, peak memory, first iteration's losses, first-iteration seconds."""
    device = repro.resolve_device(args.device)
    cfg = make_config(args, method, levels, switches)
    torch.compiler.reset()  # every row compiles (or not) from scratch
    torch.manual_seed(0)
    state = step.build_state(cfg, device)
    state.seg.train()
    src, tgt = make_batches(cfg, device)
    sync(device)
    t = time.perf_counter()
    first = {k: float(v) for k, v in step.train_step(state, src, tgt, cfg).items()}
    first_s = time.perf_counter() - t

    def one_step():
        logged = step.train_step(state, src, tgt, cfg)
        float(logged["seg_main"])  # the loop logs losses, which synchronises

    ms = median_ms(one_step, args.warmup - 1, args.iters, device)
    peak = peak_gib(device)
    state = src = tgt = None  # free the device memory before the next row (one_step() shares these)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ms, peak, first, first_s


def loss_delta(losses: dict, ref: dict) -> float:
    return max(abs(losses[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ref)


def fmt_mem(x):
    return "-" if x is None else f"{x:.2f}"


class Budget:
    """Skips rows that would end after ``seconds``; compiled rows are estimated from the last
    compiled row's first iteration (which includes the compilation)."""

    def __init__(self, seconds: float) -> None:
        self.t0, self.seconds = time.perf_counter(), seconds
        self.compile_s = COMPILE_COST_S

    def allows(self, cost: float) -> bool:
        return self.seconds <= 0 or time.perf_counter() - self.t0 + cost <= self.seconds


def run_methods(args, emit, budget: Budget) -> None:
    fast = fast_switches(args)
    label = ", ".join(f"{k.split('.')[1]}={v}" for k, v in fast.items())
    device = repro.resolve_device(args.device)
    peak_rate = matmul_gflops(device)
    emit(f"\n### Reference vs fast mode per method\n\nfast = {label}\n\n"
         f"fp32 matmul throughput of this device at {torch.get_num_threads()} thread(s), measured "
         f"in this run: {peak_rate:.0f} GFLOP/s\n")
    mem = "peak GiB (allocated) ref / fast" if args.device.startswith("cuda") else "peak GiB"
    emit(f"| method | levels | reference ms/it | fast ms/it | speed-up | {mem} | "
         "loss Δ fast vs ref (it 0) | GFLOP/it | GFLOP/s ref / fast (% of matmul) |")
    emit("|---|---|---|---|---|---|---|---|---|")
    rows = [tuple(m.split(":")) for m in args.methods] if args.methods else METHOD_ROWS
    for method, levels in rows:
        cost = 2 * args.eager_row_s + (budget.compile_s if "run.compile" in fast else 0)
        if not budget.allows(cost):
            emit(f"| {method} | {levels} | skipped (time budget) | | | | |")
            continue
        try:
            ref_ms, ref_mem, ref_loss, _ = time_training(args, method, levels, {})
            fast_ms, fast_mem, fast_loss, _ = time_training(args, method, levels, fast)
            gflop = step_gflop(make_config(args, method, levels, {}), device)
        except Exception as err:  # noqa: BLE001 - a failed row must not hide the others
            emit(f"| {method} | {levels} | failed: {type(err).__name__}: {str(err)[:120]} "
                 "| | | | | | |")
            continue
        rates = [gflop / (ms / 1000) for ms in (ref_ms, fast_ms)]
        emit(f"| {method} | {levels} | {ref_ms:.1f} | {fast_ms:.1f} | x{ref_ms / fast_ms:.2f} "
             f"| {fmt_mem(ref_mem)} / {fmt_mem(fast_mem)} | {loss_delta(fast_loss, ref_loss):.1e} "
             f"| {gflop:.1f} | {rates[0]:.0f} ({100 * rates[0] / peak_rate:.0f}%) / "
             f"{rates[1]:.0f} ({100 * rates[1] / peak_rate:.0f}%) |")


def run_ablation(args, emit, budget: Budget) -> None:
    method, levels = (args.methods[0].split(":") if args.methods else ("advent", "multi"))
    emit(f"\n### Ablation: {method} ({levels}-level), one switch added per row\n")
    emit("| variant | ms/it | it/s | x vs reference | peak GiB | loss Δ vs ref (it 0) | "
         "first it (s) |")
    emit("|---|---|---|---|---|---|---|")
    switches: dict = {}
    ref_ms = ref_loss = None
    rows = list(ABLATION)
    if args.device == "cpu":
        rows = [r for r in rows if "run.cuda_graphs" not in r[1]]
    if args.ablate_extra:
        rows += [("same, compile scope = modules", {"run.compile_scope": "modules"}),
                 ("same, mode max-autotune-no-cudagraphs",
                  {"run.compile_scope": "step", "run.compile": "max-autotune-no-cudagraphs"})]
    for name, extra in rows:
        switches = {**switches, **extra}
        compiled = switches.get("run.compile", "none") != "none"
        if not budget.allows(budget.compile_s if compiled else args.eager_row_s):
            emit(f"| {name} | skipped (time budget) | | | | | |")
            continue
        try:
            ms, peak, losses, first_s = time_training(args, method, levels, switches)
        except Exception as err:  # noqa: BLE001
            emit(f"| {name} | failed: {type(err).__name__}: {str(err)[:160]} | | | | | |")
            continue
        if compiled:
            # Later compiled rows reuse the kernels cached on disk by this one.
            budget.compile_s = 0.5 * first_s
        if ref_ms is None:
            ref_ms, ref_loss = ms, losses
        emit(f"| {name} | {ms:.1f} | {1000 / ms:.1f} | x{ref_ms / ms:.2f} | {fmt_mem(peak)} "
             f"| {loss_delta(losses, ref_loss):.1e} | {first_s:.1f} |")


def predict_labels(model, images, size, predictor):
    """The papers' protocol: main logits upsampled (align_corners=True) to the label size, argmax."""
    return predictor.predict(model, images, size)[1].argmax(1)


def time_eval(args, amp, channels_last, batch, compile_mode):
    device = repro.resolve_device(args.device)
    torch.compiler.reset()
    torch.manual_seed(0)
    model = models.build_segmenter(args.model, 19, True, 4, "train")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt).eval()
    w, h = args.eval_size
    lw, lh = args.eval_label_size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, h, w, generator=g).to(device, memory_format=fmt)
    labels = torch.randint(0, 19, (batch, lh, lw), generator=g).to(device)
    fn = predict_labels
    if compile_mode != "none":
        fn = torch.compile(predict_labels, dynamic=False, mode=compile_mode)
    conf = ConfusionMatrix(19)
    predictor = evaluate.Predictor(device=device, amp=amp)

    def once():
        with torch.no_grad():
            conf.update(fn(model, images, (lh, lw), predictor), labels)

    return median_ms(once, args.warmup, args.iters, device) / batch, peak_gib(device)


def run_eval(args, emit, budget: Budget) -> None:
    w, h = args.eval_size
    lw, lh = args.eval_label_size
    emit(f"\n### Evaluation: {w}x{h} in, logits upsampled to {lw}x{lh} (align_corners=True), "
         "argmax, confusion matrix on the device\n")
    emit("| variant | batch | ms / image | images / s | x vs reference | peak GiB |")
    emit("|---|---|---|---|---|---|")
    rows = [("fp32 (reference)", False, False, 1, "none"),
            ("bf16 + channels_last", True, True, 1, "none"),
            ("bf16 + channels_last", True, True, args.eval_batch, "none"),
            ("bf16 + channels_last + compile (forward, upsampling, argmax)", True, True,
             args.eval_batch, "default")]
    ref = None
    for name, amp, cl, batch, mode in rows:
        if not budget.allows(budget.compile_s / 2 if mode != "none" else args.eager_row_s):
            emit(f"| {name} | {batch} | skipped (time budget) | | | |")
            continue
        try:
            ms, peak = time_eval(args, amp, cl, batch, mode)
        except Exception as err:  # noqa: BLE001
            emit(f"| {name} | {batch} | failed: {type(err).__name__}: {str(err)[:120]} | | | |")
            continue
        ref = ref or ms
        emit(f"| {name} | {batch} | {ms:.1f} | {1000 / ms:.1f} | x{ref / ms:.2f} | {fmt_mem(peak)} |")


def header(args) -> str:
    env = repro.environment()
    device = repro.resolve_device(args.device)
    if device.type == "cuda":
        card = (f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, "
                f"cuDNN {torch.backends.cudnn.version()}, cudnn.benchmark={args.cudnn_benchmark}")
    else:
        card = (f"CPU ({env['platform']}), {env['cpu_threads']} threads, load average "
                f"{os.getloadavg()[0]:.1f} at the start")
    return (f"\n## Training-step benchmark\n\n"
            f"- device: {card}\n- torch {torch.__version__}, python {env['python']}, "
            f"segda git {env['git']}\n"
            f"- model {args.model}, source {tuple(args.source_size)}, target "
            f"{tuple(args.target_size)}, batch {args.batch_size} per domain; medians of "
            f"{args.iters} timed iterations after {args.warmup} warm-up\n"
            f"- command: `{' '.join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]])}`\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None)
    p.add_argument("--source-size", type=int, nargs=2, default=None, metavar=("W", "H"))
    p.add_argument("--target-size", type=int, nargs=2, default=None, metavar=("W", "H"))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--methods", nargs="*", default=None, help="e.g. advent:multi minent:multi")
    p.add_argument("--ablate", action="store_true", help="the one-switch-at-a-time table")
    p.add_argument("--ablate-extra", action="store_true",
                   help="also compile scope 'modules' and max-autotune rows")
    p.add_argument("--no-methods", action="store_true", help="skip the per-method table")
    p.add_argument("--eval", action="store_true", help="the evaluation table")
    p.add_argument("--eval-size", type=int, nargs=2, default=None, metavar=("W", "H"))
    p.add_argument("--eval-label-size", type=int, nargs=2, default=None, metavar=("W", "H"))
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--no-amp", action="store_true", help="fp32 fast mode in the per-method table")
    p.add_argument("--fast-compile", default="none",
                   choices=["none", "default", "max-autotune-no-cudagraphs"],
                   help="also compile in the per-method table's fast mode")
    p.add_argument("--cuda-graphs", action="store_true", help="with --fast-compile")
    p.add_argument("--compile-backend", default="inductor", choices=["inductor", "aot_eager"],
                   help="aot_eager: trace only (a quick check that the compiled rows run)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark = True (the official code sets it)")
    p.add_argument("--budget-s", type=float, default=0,
                   help="skip rows that would end after this many seconds (0: no limit)")
    p.add_argument("--out", default=None, help="append the tables to this Markdown file")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's, i.e. OMP_NUM_THREADS or the cores)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    args.model = args.model or ("deeplabv2_resnet101" if gpu else "small")
    args.source_size = args.source_size or ((1280, 720) if gpu else (128, 64))
    args.target_size = args.target_size or ((1024, 512) if gpu else (128, 64))
    args.batch_size = args.batch_size or (1 if gpu else 8)
    args.eval_size = args.eval_size or ((1024, 512) if gpu else (128, 64))
    args.eval_label_size = args.eval_label_size or ((2048, 1024) if gpu else (256, 128))
    args.eager_row_s = 20 if gpu else 10
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    with report.emitter(args.out) as emit:
        budget = Budget(args.budget_s)
        emit(header(args))
        if args.ablate:
            run_ablation(args, emit, budget)
        if not args.no_methods:
            run_methods(args, emit, budget)
        if args.eval:
            run_eval(args, emit, budget)
        if not gpu:
            emit(f"\n(process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)")


if __name__ == "__main__":
    main()
