"""Command line: ``python -m segda <command>``.

Commands:
  train       train one preset into a run folder (resumes when the folder has a checkpoint);
              torchrun --nproc_per_node N -m segda train ... trains data-parallel
  eval        evaluate one checkpoint or an ensemble; writes a per-class table beside it
  suite       the embedded-benchmark experiment over seeds; prints the results table
  variant     one embedded preset with overrides over seeds (lambda sweeps, longer schedules)
  ensemble    evaluate an ensemble of finished embedded runs per seed (AdvEnt + MinEnt)
  collect     gather every run's metrics under a folder into one table
  ledger      evaluate every kept snapshot of runs: last iterate, best snapshot, over seeds
  sweep       execute a notebook with papermill (or train) over presets and seeds: serially,
              as local processes or as a SLURM job array (--executor); --status OUT
  demo        run the notebook sequence (or the library pipeline) at demo scale
  ship        (re)make the shipped source-only checkpoint and its manifest, or --check it
  doctor      check a dataset folder: what is present, missing, damaged, and the fix
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def cmd_train(args) -> int:
    """Train one preset; under ``torchrun`` every rank joins the data-parallel run."""
    from segda import config, distributed, methods, repro, runs, train
    from segda.data import registry

    if args.stop_at is not None and args.stop_at < 1:
        raise config.ConfigError(f"--stop-at must be an iteration of at least 1, got {args.stop_at}")
    cfg = config.load(args.preset, config.parse_overrides(args.set))
    if args.executor != "serial":
        if args.stop_at is not None or args.retrain:
            raise CommandLineError(f"--executor {args.executor} submits the run to train to the end "
                                   "(resuming what the folder holds): without --stop-at and --retrain")
        from segda import jobs

        run_dir = Path(args.run_dir).resolve()
        job = jobs.TrainJob(args.preset, str(run_dir), overrides=tuple(args.set),
                            gpus=args.gpus_per_job or 0)
        return _submit([job], run_dir, args, table=False)
    methods.get(cfg.method.name)  # an unknown method is a config error before anything runs
    repro.check_device(cfg.run.device)  # before the run folder is created
    if not (Path(args.run_dir) / runs.CHECKPOINT).exists() or args.retrain:
        # a new run needs its starting weights and its data; a resumed one has last.pth
        _require_init_checkpoint(cfg.model.init_checkpoint)
        registry.require_roots(cfg.data)
    dist = distributed.init_from_env(device=cfg.run.device) if distributed.launched_by_torchrun() \
        else None
    main = dist is None or dist.is_main
    try:
        if main:
            print(cfg.to_yaml())
        if dist is not None and main:
            print(f"{dist.world_size} ranks, {cfg.data.batch_size} image(s) per domain per rank: "
                  f"effective batch {dist.world_size * cfg.data.batch_size}", flush=True)
        if args.stop_at is not None:
            result = train.fit(cfg, args.run_dir, resume=not args.retrain, stop_at=args.stop_at,
                               dist=dist)
        else:
            result = train.ensure_run(args.run_dir, cfg, retrain=args.retrain, dist=dist)
        if main:
            final = result.final_eval or {}
            if "target_miou" in final:
                print(f"done: iteration {result.state.iteration}, target mIoU "
                      f"{100 * final['target_miou']:.2f}", flush=True)
            else:  # stopped early (--stop-at): evaluated when it finishes
                print(f"stopped at iteration {result.state.iteration} (not evaluated yet); "
                      "rerun without --stop-at to finish the run", flush=True)
    finally:
        if dist is not None:
            distributed.destroy()
    return 0


class CommandLineError(ValueError):
    """An argument that cannot be carried out as typed (the message names it and the fix)."""


def _require_init_checkpoint(value: str) -> None:
    """``model.init_checkpoint`` names a file (or verified shipped weights), checked before a
    new run's folder is made: a wrong path would otherwise leave a folder of another config."""
    from segda import shipped

    if not value:
        return
    path = shipped.resolve(value) if shipped.is_shipped(value) else Path(value)
    if not path.is_file():
        raise CommandLineError(f"init checkpoint not found: {path} (set model.init_checkpoint to "
                               "an existing file, or '' to start from scratch)")


def _model_from_checkpoint(path: Path, args):
    """The segmenter of a checkpoint file and the config it predicts with: a run
    checkpoint's own, or (an official file) the defaults for ``--model``."""
    from segda import checkpointing, config, models

    if path.is_dir():
        found = sorted(path.glob("*.pth"), key=lambda p: (p.name != "last.pth", p.name))
        held = (f"the checkpoints in it: {', '.join(p.name for p in found)}; pass one of them, "
                f"e.g. --checkpoint {found[0]}" if found else "it holds no checkpoint (*.pth)")
        raise checkpointing.CheckpointError(f"{path} is a folder, not a checkpoint file; {held}")
    # Read once; errors name the file, pickled code and non-finite tensors are refused.
    blob = checkpointing.read_weights(path, "evaluating it")
    if checkpointing.is_run_checkpoint(blob):
        return checkpointing.segmenter_from_run(blob, path)
    from segda.models import checkpoints

    branches = args.aspp_branches or checkpoints.aspp_branches_for(path.name)
    cfg = config.load(None, {"model.name": args.model, "model.aspp_branches": branches,
                             "model.multi_level": args.model != "deeplab_vgg16"})
    seg = models.build_segmenter(args.model, 19, cfg.model.multi_level, branches)
    try:
        checkpoints.load_loaded(seg, blob, str(path), kind="adapted")
    except checkpoints.CheckpointMismatchError:
        fits = _architecture_of(blob, branches, exclude=args.model)
        if fits is None:
            raise
        raise CommandLineError(f"{path} holds weights of the {fits!r} model, not of --model "
                               f"{args.model} (the default for official checkpoints): pass "
                               f"--model {fits}") from None
    return seg, cfg


def _architecture_of(blob, aspp_branches: int, exclude: str) -> str | None:
    """The segmenter whose tensors (names and shapes) are exactly ``blob``'s, built without
    memory on the meta device; None when ``blob`` is not a plain state dict or none fits."""
    import torch

    from segda import models

    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        return None
    shapes = {k: tuple(v.shape) for k, v in blob.items()}
    for name in (n for n in models.SEGMENTERS if n != exclude):
        for multi_level in (True, False):
            try:
                with torch.device("meta"):
                    seg = models.build_segmenter(name, 19, multi_level, aspp_branches)
            except ValueError:  # a combination the model does not have (VGG: one level)
                continue
            if {k: tuple(v.shape) for k, v in seg.state_dict().items()} == shapes:
                return name
    return None


def _output_folder(folder: Path) -> Path:
    """``folder``, made and checked writable before anything is evaluated."""
    import tempfile

    fix = "pass --out DIR, a folder you can write (made when missing)"
    if folder.exists() and not folder.is_dir():
        raise CommandLineError(f"the output folder {folder} is a file, not a folder; {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise CommandLineError(
            f"cannot write into the output folder {folder} ({err.strerror or err}); {fix}"
        ) from None
    return folder


def _digest(*texts: str) -> str:
    import hashlib

    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:8]


def _eval_stem(args, paths: list[Path], weights: tuple[float, ...], dataset: str) -> str:
    """The name of an evaluation's tables: everything that changes them, so that two
    evaluations never share a file. One checkpoint written beside itself is named by its file;
    otherwise each member by its folder and file, with a digest of their full paths (ensembles
    of same-named folders of two seeds stay apart)."""
    if len(paths) == 1 and not args.out:
        parts = [paths[0].stem]
    else:
        parts = ["+".join(f"{p.parent.name}-{p.stem}" for p in paths),
                 _digest(*(str(p.resolve()) for p in paths))]
    if len(set(weights)) > 1:
        parts.append("w" + "-".join(f"{w:g}" for w in weights))
    if args.combine != "logits":
        parts.append(args.combine)
    parts.append(dataset)
    if args.root:
        parts.append(f"root-{_digest(str(Path(args.root).resolve()))}")
    if args.max_images is not None:
        parts.append(f"{args.max_images}img")
    return "eval_" + "_".join(parts) + f"_{args.num_eval_classes}cls"


def _check_max_images(args) -> None:
    """--max-images as every evaluation function takes it: at least 1; omitted = every image."""
    from segda import evaluate

    if args.max_images is not None and args.max_images < 1:
        raise evaluate.EvaluationError(
            f"--max-images must be at least 1 (omit it to evaluate every image), got "
            f"{args.max_images}")


def cmd_eval(args) -> int:
    """Evaluate one checkpoint or an ensemble, each predicted as its run was evaluated."""
    from segda import evaluate, io, metrics, shipped
    from segda.data import registry
    from segda.labels import CLASS_NAMES

    _check_max_images(args)
    # "shipped:<name>", as model.init_checkpoint takes it: the verified file
    paths = [shipped.resolve(p) if shipped.is_shipped(p) else Path(p) for p in args.checkpoint]
    try:
        weights = evaluate.ensemble_weights(args.weights, len(paths))
    except evaluate.EvaluationError as err:
        raise CommandLineError(f"--weights: {err}") from None
    out_dir = _output_folder(Path(args.out) if args.out else paths[0].parent)
    loaded = [_model_from_checkpoint(p, args) for p in paths]
    for path, (_, cfg) in zip(paths, loaded, strict=True):
        if cfg.model.num_classes != len(CLASS_NAMES):
            raise evaluate.EvaluationError(
                f"{path} holds a model of {cfg.model.num_classes} classes; eval reports the "
                f"{len(CLASS_NAMES)} Cityscapes classes (and their 16/13-class subsets), so it "
                f"needs a {len(CLASS_NAMES)}-class model. Evaluate this one from Python with "
                "segda.evaluate.evaluate on labels of its classes")
    seg_models = [m for m, _ in loaded]
    base = loaded[0][1]
    predictor = evaluate.Predictor.for_runs([c for _, c in loaded], [str(p) for p in paths],
                                            args.device, weights=weights, combine=args.combine)
    overrides = {"data.dataset": args.dataset or base.data.dataset}
    if args.root:
        overrides["data.root"] = args.root
    data_cfg = base.replace(overrides)
    data = registry.build_datasets(data_cfg.data, data_cfg.model)
    res = evaluate.evaluate(seg_models, data.val_target, predictor, max_images=args.max_images)
    name = "+".join(p.stem for p in paths)
    classes = None
    if args.num_eval_classes != 19:
        from segda.labels import CLASS_SUBSETS

        classes = CLASS_SUBSETS[args.num_eval_classes]
    df = metrics.iou_table({name: res.iou}, classes=classes)
    stem = _eval_stem(args, paths, weights, data_cfg.data.dataset)
    io.write_text_atomic(out_dir / f"{stem}.csv", df.to_csv())
    text = metrics.format_iou_table(df)
    io.write_text_atomic(out_dir / f"{stem}.md", text + "\n")
    print(text)
    print(f"predicted with {predictor.describe()}")
    print(f"wrote {out_dir / stem}.md and .csv")
    return 0


def cmd_suite(args) -> int:
    from segda import config, experiments, results, runs

    t0 = time.perf_counter()
    pre = config.parse_overrides(args.pretrain_set, "--pretrain-set")
    ada = config.parse_overrides(args.adapt_set, "--adapt-set")
    for seed in args.seeds:
        experiments.run_seed(args.run_root, seed, pretrain_overrides=pre, adapt_overrides=ada,
                             pretrained=args.pretrained)
        if args.studies != []:  # None: every study
            experiments.run_studies(args.run_root, seed, args.studies, pretrained=args.pretrained,
                                    adapt_overrides=ada, pretrain_overrides=pre)
    collected = runs.collect(args.run_root)
    print(results.write_results(args.run_root, collected))
    # The lowest seed's rows beside the committed three-seed reference: the same ordering?
    print(results.format_beside(results.beside_collected(collected)))
    if args.reference:
        path = results.REFERENCE if args.reference == "package" else args.reference
        print(f"wrote the reference runs to {results.write_reference(collected, path)}")
    wall = time.perf_counter() - t0
    print(f"wall time {wall:.0f} s")
    _write_readme(args, collected, wall)
    return 0


def _write_readme(args, collected, wall_time_s: float | None = None) -> None:
    """--readme: the table, with its machine and wall time, between the markers of a Markdown file
    (docs/embedded_benchmark.md holds the embedded benchmark's)."""
    if not args.readme:
        return
    from segda import results

    if args.readme_variant:
        collected = results.select_variant(collected, args.readme_variant)
    block = results.results_block(collected, wall_time_s)
    results.write_readme_block(args.readme, args.readme_block, block)
    print(f"wrote the table into {args.readme} (block {args.readme_block!r})")


def cmd_variant(args) -> int:
    from segda import config, experiments, rows

    overrides = config.parse_overrides(args.set)
    folder, _, preset = args.preset.rpartition("/")
    if folder not in ("", "embedded"):
        raise CommandLineError(f"variant trains embedded presets, not {args.preset}; train it with: "
                               f"python -m segda train {args.preset} --run-dir DIR --set ...")
    config.preset_path(f"embedded/{preset}")  # an unknown preset: the list, before any run
    if rows.find(args.name) is not None:
        raise CommandLineError(f"--name {args.name} is a row of the main table; a variant needs "
                               f"its own folder name, e.g. --name {args.name}_long")
    for seed in args.seeds:
        result = experiments.run_variant(args.run_root, seed, preset, args.name, overrides,
                                         pretrained=args.pretrained)
        for ev in result.state.evals:
            source = 100 * ev.get("source_miou", float("nan"))
            print(f"seed {seed} {args.name} iteration {ev['iteration']}: target mIoU "
                  f"{100 * ev['target_miou']:.1f}, source mIoU {source:.1f}")
    return 0


def cmd_ensemble(args) -> int:
    from segda import experiments, train
    from segda.data import registry

    for seed in args.seeds:
        root = Path(args.run_root) / f"seed{seed}"
        results = {m: train.load_run(root / m) for m in args.members}
        cfg = results[args.members[0]].config
        res = experiments.evaluate_ensemble(
            args.run_root, seed, results, registry.build_datasets(cfg.data, cfg.model),
            members=args.members, weights=args.weights or [1 / len(args.members)] * len(args.members),
            name=args.name)
        print(f"seed {seed} {'+'.join(args.members)}: target mIoU {100 * res.miou:.1f}")
    return 0


def cmd_collect(args) -> int:
    from segda import results, runs

    collected = runs.collect(args.run_root)
    try:
        print(results.write_results(args.run_root, collected))
    except RuntimeError as err:  # no finished run under the folder
        print(f"error: {err}; a run is finished when its folder holds metrics.json (python -m "
              "segda train ... finishes it)", file=sys.stderr)
        _print_missing(Path(args.run_root))
        return 1
    _write_readme(args, collected)
    _print_missing(Path(args.run_root))
    return 0


def _print_missing(run_root: Path) -> None:
    """The submitted jobs (``jobs.json``) whose runs are not in the table yet, and why."""
    from segda import cluster

    if not (run_root / cluster.MANIFEST).exists():
        return
    try:
        missing = [s for s in cluster.job_states(run_root) if s.state != "done"]
    except cluster.ClusterError as err:  # e.g. collected where sacct does not answer
        print(f"the jobs of {run_root / cluster.MANIFEST} not checked: {err}", file=sys.stderr)
        return
    if missing:
        print(f"missing {len(missing)} job(s) of {run_root / cluster.MANIFEST}:\n"
              + "\n".join(s.line() for s in missing), file=sys.stderr)


def cmd_ledger(args) -> int:
    from segda import config, ledger

    _check_max_images(args)
    for path in map(Path, args.runs):
        if not path.exists():
            raise CommandLineError(f"{path} does not exist; give run folders, or folders that "
                                   "hold them (e.g. runs/embedded)")
    text = ledger.ledger(args.runs, args.out, max_images=args.max_images, device=args.device,
                         overrides=config.parse_overrides(args.set))
    print(text)
    return 0


def cmd_sweep(args) -> int:
    """Check every preset (against its notebook, or as a training run with --train), then run
    the jobs with the executor, write and print the table of those that finished; a failed job
    is one line and exit code 1. ``--status OUT``: the state of every submitted job."""
    from segda import config, jobs, notebooks_runner

    if args.status:
        return _print_status(Path(args.status), args.wait)
    missing = [flag for flag, value in (("--out", args.out), ("--presets", args.presets),
                                        ("--notebook", args.notebook or args.train)) if not value]
    if missing:
        raise CommandLineError(f"sweep needs {' and '.join(missing)} (or --status OUT to see a "
                               "submitted sweep)")
    if args.executor != "serial":
        from segda import cluster

        cluster.require_submitit()
    if args.train:
        planned = jobs.plan_train(args.out, jobs.expand_presets(args.presets), args.seeds, args.set,
                                  gpus=args.gpus_per_job or 0)
    else:
        if (args.gpus_per_job or 0) > 1:
            raise CommandLineError("a notebook trains on one device: --gpus-per-job 1 (or train "
                                   "data-parallel with --train)")
        try:
            planned, notes = notebooks_runner.plan_sweep(
                args.notebook, args.out, jobs.expand_presets(args.presets), args.seeds,
                config.parse_overrides(args.param, "-p"))
        except notebooks_runner.SweepError as err:
            print(f"error: {err}".replace("\n", "\nerror: "), file=sys.stderr)
            return 1
        for note in notes:
            print(note, flush=True)
    out = Path(args.out).resolve()
    if args.executor == "serial" and not args.train:
        _, failures = notebooks_runner.sweep(args.notebook, out, [], [], jobs=planned)
        return _finish(out, failures, len(planned))
    return _submit(planned, out, args)


def _submit(planned, out: Path, args, table: bool = True) -> int:
    """Run or submit ``planned`` with ``args.executor``; once they end, the failures and (a
    sweep: ``table``) the table of the runs under ``out``."""
    from segda import cluster, jobs

    runnable = [jobs.ResumableJob(j) for j in planned]
    if args.executor == "serial":
        return _finish(out, cluster.run_serial(runnable), len(planned), table)
    out.mkdir(parents=True, exist_ok=True)
    if args.executor == "local":
        gpus = 1 if args.gpus_per_job is None else args.gpus_per_job
        cluster.run_local(runnable, out, args.parallel, gpus_per_job=gpus)
    else:
        options = cluster.SlurmOptions.from_profile(
            args.slurm_profile, partition=args.slurm_partition, gpus_per_job=args.gpus_per_job,
            cpus_per_job=args.cpus_per_job, time=args.time, array_parallelism=args.array_parallelism,
            setup=args.slurm_setup)
        cluster.submit_slurm(runnable, out, options)
        if not args.wait:
            print(f"{len(planned)} jobs submitted; their states: python -m segda sweep --status {out}"
                  f"; the table once they finish: python -m segda collect {out}")
            return 0
        cluster.wait(out)
    states = cluster.job_states(out)
    if not table:
        print("\n".join(s.line() for s in states))
    failures = [s.line() for s in states if s.state == "failed"]
    return _finish(out, failures, len(planned), table)


def _finish(out: Path, failures: list[str], count: int, table: bool = True) -> int:
    from segda import results

    try:
        if table:
            print(results.write_results(out))
    except RuntimeError as err:  # every job failed
        print(err, file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {count} jobs failed:\n" + "\n".join(failures), file=sys.stderr)
    return 1 if failures else 0


def _print_status(out: Path, wait: bool) -> int:
    """One line per submitted job: done, queued, running or failed (with its log)."""
    from segda import cluster

    states = cluster.wait(out) if wait else cluster.job_states(out)
    for state in states:
        print(state.line())
    print(cluster.summary(states))
    return 1 if any(s.state == "failed" for s in states) else 0


def cmd_demo(args) -> int:
    from segda import notebooks_runner

    return notebooks_runner.demo(Path(args.out), quick=args.quick)


def cmd_ship(args) -> int:
    """Make the shipped checkpoint (train, write weights, SHA-256 and first losses into the
    manifest), or with ``--check`` verify the file and regenerate its first iterations."""
    from segda import shipped, shipping

    if args.rescore:
        record = shipping.rescore_shipped()
        print(f"{shipped.resolve(shipped.reference())} (SHA-256 {record['sha256']}, unchanged) "
              f"re-evaluated: target mIoU {100 * record['target_miou']:.1f}, "
              f"source mIoU {100 * record['source_miou']:.1f} (balance_shift "
              f"{record['balance_shift']:g})")
        return 0
    if not args.check:
        record = shipping.make_shipped(args.run_dir, seed=args.seed, progress_bar="text")
        print(f"wrote {shipped.FOLDER / record['file']} (SHA-256 {record['sha256']}); "
              f"target mIoU {100 * record['target_miou']:.1f}, "
              f"source mIoU {100 * record['source_miou']:.1f}")
        return 0
    record = shipped.entry(shipped.EMBEDDED_PRETRAINED)
    print(f"{shipped.resolve(shipped.reference())}: SHA-256 matches the manifest")
    again = shipping.first_losses(record["seed"], len(record["first_losses"]))
    worst = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12)
                for a, b in zip(again, record["first_losses"], strict=True) for k in b)
    print(f"first {len(again)} iterations regenerated: largest relative loss difference {worst:.2e}")
    return 0 if worst < shipping.FINGERPRINT_RTOL else 1


def _add_readme_args(p) -> None:
    p.add_argument("--readme", metavar="PATH", help="also write the table into this Markdown file "
                   "(the embedded benchmark's: docs/embedded_benchmark.md), between its "
                   "'<!-- segda:results NAME begin ... -->' / 'end' markers")
    p.add_argument("--readme-block", default="embedded", metavar="NAME")
    p.add_argument("--readme-variant", metavar="SUFFIX",
                   help="the --readme table of the variant runs named <row>SUFFIX (e.g. @400it) instead")


def _add_executor_args(p) -> None:
    g = p.add_argument_group("executor", "where the jobs run (docs/cluster.md)")
    g.add_argument("--executor", choices=["serial", "local", "slurm"], default="serial",
                   help="serial: one after another here (default); local: subprocesses here, "
                   "--parallel at once; slurm: one job array (needs submitit: "
                   "pip install -e '.[cluster]')")
    g.add_argument("--parallel", type=int, default=1, metavar="N", help="local: jobs at once")
    g.add_argument("--wait", action="store_true",
                   help="slurm: return when every job has ended (default: once submitted); "
                   "--status: wait until no job is queued or running")
    g.add_argument("--gpus-per-job", type=int, metavar="N",
                   help="GPUs per job (local default: 1 when there are GPUs; slurm: none asked); "
                   "a train job with N > 1 trains data-parallel over N processes")
    g.add_argument("--cpus-per-job", type=int, metavar="N")
    g.add_argument("--slurm-partition", metavar="NAME")
    g.add_argument("--time", metavar="LIMIT", help="slurm: each job's time limit (minutes, "
                   "H:MM:SS or D-HH:MM:SS); a job that reaches it is requeued and resumes")
    g.add_argument("--array-parallelism", type=int, metavar="N",
                   help="slurm: array tasks running at once")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="slurm: a shell line run before each job (module load, conda activate)")
    g.add_argument("--slurm-profile", metavar="YAML",
                   help="slurm: the above in a file (partition, gpus_per_job, cpus_per_job, time, "
                   "array_parallelism, setup); options given override it")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["doctor"]:  # the doctor has its own options (python -m segda.doctor)
        from segda import doctor

        return doctor.main(argv[1:], prog="python -m segda doctor")
    parser = argparse.ArgumentParser(prog="python -m segda", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a preset into a run folder (under torchrun: "
                       "data-parallel over the ranks)")
    p.add_argument("preset")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--retrain", action="store_true",
                   help="train again from the start, replacing what the folder holds")
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop after this iteration (the run can be resumed)")
    _add_executor_args(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate checkpoints (several = ensemble)")
    p.add_argument("--checkpoint", nargs="+", required=True)
    p.add_argument("--weights", nargs="+", type=float)
    p.add_argument("--combine", choices=["logits", "probs"], default="logits")
    p.add_argument("--dataset")
    p.add_argument("--root")
    p.add_argument("--model", default="deeplabv2_resnet101",
                   help="architecture of official checkpoints (segda checkpoints carry theirs)")
    p.add_argument("--aspp-branches", type=int, choices=[2, 4])
    p.add_argument("--num-eval-classes", type=int, choices=[19, 16, 13], default=19)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-images", type=int)
    p.add_argument("--out")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("suite", help="embedded benchmark: every method over seeds")
    p.add_argument("--run-root", default="runs/embedded")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--adapt-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--pretrained", choices=["shipped", "train"], default="shipped",
                   help="adaptation starts from the shipped source-only checkpoint (default) or "
                   "from each seed's own source_pretrain run")
    p.add_argument("--studies", nargs="*", default=None, metavar="STUDY",
                   help="the studies behind the defaults to train after each seed's rows "
                   "(segda.experiments.STUDIES: lambda, shift, bn, patch; default: all)")
    p.add_argument("--no-studies", dest="studies", action="store_const", const=[],
                   help="train the main rows only")
    p.add_argument("--reference", nargs="?", const="package", metavar="CSV",
                   help="also write every run to this CSV (without a path: the package's "
                   "lib/segda/reference/embedded_runs.csv, which the notebooks plot against)")
    _add_readme_args(p)
    p.set_defaults(fn=cmd_suite)

    p = sub.add_parser("variant", help="embedded benchmark: one preset with overrides, paired per seed")
    p.add_argument("preset", help="embedded preset name, e.g. output_adv_single")
    p.add_argument("--name", required=True, help="run folder name under seed<k>/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--run-root", default="runs/embedded")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--pretrained", choices=["shipped", "train"], default="shipped",
                   help="start from the shipped checkpoint (default) or each seed's own pretraining")
    p.set_defaults(fn=cmd_variant)

    p = sub.add_parser("ensemble", help="embedded benchmark: ensemble of finished runs, per seed")
    p.add_argument("--members", nargs="+", required=True, help="run folder names under seed<k>/")
    p.add_argument("--weights", nargs="+", type=float, help="default: equal weights (ADVENT: 0.5 0.5)")
    p.add_argument("--name", help="run folder of the result (default: the members joined by '+')")
    p.add_argument("--run-root", default="runs/embedded")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.set_defaults(fn=cmd_ensemble)

    p = sub.add_parser("collect", help="table of every finished run under a folder")
    p.add_argument("run_root")
    _add_readme_args(p)
    p.set_defaults(fn=cmd_collect)

    p = sub.add_parser("ledger", help="evaluate every kept snapshot of runs (seeds grouped): "
                       "last iterate, best snapshot (the papers' rule), mean +/- std, the papers' number")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folders, or folders searched for run folders")
    p.add_argument("--out", help="where ledger.md/.csv go (default: the runs' common folder)")
    p.add_argument("--max-images", type=int, help="validation images (default: the whole split)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="where the validation split is read, e.g. data.root=DIR")
    p.set_defaults(fn=cmd_ledger)

    p = sub.add_parser("sweep", help="papermill a notebook (or --train) over presets and seeds, "
                       "serially, locally in parallel or on SLURM")
    p.add_argument("--notebook")
    p.add_argument("--train", action="store_true",
                   help="train each (preset, seed) with the train command into OUT/seed<k>/<row>")
    p.add_argument("--out")
    p.add_argument("--presets", nargs="+", help="preset names; a folder (paper) for all of its presets")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a notebook parameter")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override of every --train run")
    p.add_argument("--status", metavar="OUT",
                   help="the state of every job submitted into OUT: done / queued / running / failed")
    _add_executor_args(p)
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("demo", help="the notebook sequence at demo scale")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    p.set_defaults(fn=cmd_demo)

    # Listed for --help; main hands its arguments to segda.doctor's own parser.
    sub.add_parser("doctor", help="check a dataset folder (the same as python -m segda.doctor)")

    p = sub.add_parser("ship", help="make the shipped source-only checkpoint (or --check it)")
    p.add_argument("--run-dir", default="runs/shipped/source_pretrain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true",
                   help="verify the shipped file's SHA-256 and regenerate its first iterations")
    p.add_argument("--rescore", action="store_true",
                   help="re-evaluate the shipped file, unchanged, on the preset's validation splits "
                   "as rendered now (after a change of the target domain) and record the scores")
    p.set_defaults(fn=cmd_ship)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except _user_errors() as err:  # the message names the file or key and the fix
        print(f"error: {_message(err)}", file=sys.stderr)
        return 1


def _message(err: BaseException) -> str:
    """The error's text; an operating-system error without its ``[Errno N]`` prefix, and the
    file named once (``checkpoint not found: P``, ``Permission denied: P``)."""
    if isinstance(err, OSError) and err.strerror:
        name = err.filename
        return err.strerror if name is None or str(name) in err.strerror else \
            f"{err.strerror}: {name}"
    return str(err)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by an input (a config value, a file, a folder in use), reported in one
    line without a traceback."""
    from segda import checkpointing, cluster, config, evaluate, io, repro, results, runs, shipped, trainlog
    from segda.data.real import DatasetError
    from segda.models.checkpoints import CheckpointMismatchError

    return (config.ConfigError, checkpointing.CheckpointError, io.DiskFullError,
            runs.RunFileError, runs.RunLockedError, runs.ConfigMismatchError,
            trainlog.NonFiniteLossError, evaluate.EvaluationError, CheckpointMismatchError,
            CommandLineError, FileNotFoundError, repro.DeviceError, shipped.ShippedWeightsError,
            results.ReadmeMarkersError, DatasetError, cluster.ClusterError,
            # a read-only folder, or a file where a folder should be: the message names the path
            PermissionError, FileExistsError, NotADirectoryError, IsADirectoryError)
