"""Command line: ``python -m segda <command>``; each command parses its arguments and calls
the library (``torchrun --nproc_per_node N -m segda train ...`` trains data-parallel)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from segda import errors


def cmd_train(args) -> int:
    """Train one preset; under ``torchrun`` every rank joins the data-parallel run."""
    from segda import config, distributed, train

    if args.stop_at is not None and args.stop_at < 1:
        raise config.ConfigError(f"--stop-at must be an iteration of at least 1, got {args.stop_at}")
    cfg = config.load(args.preset, config.parse_overrides(args.set))
    if args.executor != "serial":
        if args.stop_at is not None or args.retrain:
            raise CommandLineError(f"--executor {args.executor} submits the run to train to the end "
                                   "(resuming what the folder holds): without --stop-at and --retrain")
        from segda import jobs  # the executors' module, only when one is asked for

        run_dir = Path(args.run_dir).resolve()
        job = jobs.TrainJob(args.preset, str(run_dir), overrides=tuple(args.set),
                            gpus=args.gpus_per_job or 0)
        return _submit([job], run_dir, args, table=False)
    train.check_before_run(cfg, args.run_dir, args.retrain)  # before the run folder is made
    dist = distributed.init_from_env(device=cfg.run.device) if distributed.launched_by_torchrun() \
        else None
    main = dist is None or dist.is_main
    try:
        if main:
            print(cfg.to_yaml())
        if dist is not None and main:
            print(f"{dist.world_size} ranks, {cfg.data.batch_size} image(s) per domain per rank: "
                  f"effective batch {dist.world_size * cfg.data.batch_size}", flush=True)
        result = train.train_to_end(cfg, args.run_dir, retrain=args.retrain, stop_at=args.stop_at,
                                    dist=dist)
        if main:
            print(train.outcome(result), flush=True)
    finally:
        if dist is not None:
            distributed.destroy()
    return 0


class CommandLineError(ValueError, errors.UserError):
    """An argument that cannot be carried out as typed (the message names it and the fix)."""


def _check_max_images(args) -> None:
    if args.max_images is not None and args.max_images < 1:  # omitted: every image
        raise CommandLineError(f"--max-images must be at least 1 (omit it to evaluate every "
                               f"image), got {args.max_images}")


def cmd_eval(args) -> int:
    """Evaluate one checkpoint or an ensemble, each predicted as its run was evaluated."""
    from segda import evaluate, evaluate_files

    _check_max_images(args)
    try:
        weights = evaluate.ensemble_weights(args.weights, len(args.checkpoint))
    except evaluate.EvaluationError as err:
        raise CommandLineError(f"--weights: {err}") from None
    print(evaluate_files.evaluate_files(
        args.checkpoint, args.out, model=args.model, aspp_branches=args.aspp_branches,
        device=args.device, weights=weights, combine=args.combine, dataset=args.dataset,
        root=args.root, max_images=args.max_images, num_classes=args.num_eval_classes))
    return 0


def cmd_suite(args) -> int:
    from segda import config, experiments, results, runs

    t0 = time.perf_counter()
    pre = config.parse_overrides(args.pretrain_set, "--pretrain-set")
    ada = config.parse_overrides(args.adapt_set, "--adapt-set")
    experiments.run_suite(args.run_root, args.seeds, args.studies, args.pretrained, pre, ada)
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
    from segda import results

    if args.readme:
        print(results.write_readme_table(args.readme, args.readme_block, collected,
                                         args.readme_variant, wall_time_s))


def cmd_variant(args) -> int:
    from segda import config, experiments

    overrides = config.parse_overrides(args.set)
    preset = experiments.variant_preset(args.preset, args.name)
    for seed in args.seeds:
        result = experiments.run_variant(args.run_root, seed, preset, args.name, overrides,
                                         pretrained=args.pretrained)
        for ev in result.state.evals:
            source = 100 * ev.get("source_miou", float("nan"))
            print(f"seed {seed} {args.name} iteration {ev['iteration']}: target mIoU "
                  f"{100 * ev['target_miou']:.1f}, source mIoU {source:.1f}")
    return 0


def cmd_ensemble(args) -> int:
    from segda import experiments

    for seed in args.seeds:
        res = experiments.ensemble_of_runs(args.run_root, seed, args.members, args.weights,
                                           args.name)
        print(f"seed {seed} {'+'.join(args.members)}: target mIoU {100 * res.miou:.1f}")
    return 0


def cmd_collect(args) -> int:
    from segda import cluster, results, runs

    collected = runs.collect(args.run_root)
    try:  # no finished run: results.NoFinishedRunsError, one line
        print(results.write_results(args.run_root, collected))
        _write_readme(args, collected)
    finally:
        cluster.print_missing(Path(args.run_root))
    return 0


def cmd_ledger(args) -> int:
    from segda import config, ledger

    _check_max_images(args)
    for path in map(Path, args.runs):
        if not path.exists():
            raise CommandLineError(f"{path} does not exist; give run folders, or folders that "
                                   "hold them (e.g. runs/embedded)")
    print(ledger.ledger(args.runs, args.out, max_images=args.max_images, device=args.device,
                        overrides=config.parse_overrides(args.set)))
    return 0


def cmd_sweep(args) -> int:
    """Check every preset (against its notebook, or as a training run with --train), then run
    the jobs with the executor, write and print the table of those that finished; a failed job
    is one line and exit code 1. ``--status OUT``: the state of every submitted job."""
    from segda import cluster, config, jobs, notebooks_runner

    if args.status:
        return cluster.print_states(Path(args.status), args.wait)
    missing = [flag for flag, value in (("--out", args.out), ("--presets", args.presets),
                                        ("--notebook", args.notebook or args.train)) if not value]
    if missing:
        raise CommandLineError(f"sweep needs {' and '.join(missing)} (or --status OUT to see a "
                               "submitted sweep)")
    if args.executor != "serial":
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
        return cluster.report_end(out, failures, len(planned))
    return _submit(planned, out, args)


def _submit(planned, out: Path, args, table: bool = True) -> int:
    from segda import cluster

    slurm = cluster.SlurmOptions.from_profile(
        args.slurm_profile, partition=args.slurm_partition, gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job, time=args.time, array_parallelism=args.array_parallelism,
        setup=args.slurm_setup) if args.executor == "slurm" else None
    return cluster.run_jobs(planned, out, args.executor, parallel=args.parallel,
                            gpus_per_job=args.gpus_per_job, slurm=slurm, wait_for_slurm=args.wait,
                            table=table)


def cmd_demo(args) -> int:
    from segda import notebooks_runner

    return notebooks_runner.demo(args.out, quick=args.quick)


def cmd_ship(args) -> int:
    """Make the shipped checkpoint (train, write weights, SHA-256 and first losses into the
    manifest), or with ``--check`` verify the file and regenerate its first iterations."""
    from segda import shipped, shipping

    if args.run is not None:
        print(shipping.describe_shipped_run(shipping.ship_run(args.run)))
        return 0
    if args.rescore:
        print(shipping.describe_rescore(shipping.rescore_shipped()))
        return 0
    if not args.check:
        record = shipping.make_shipped(args.run_dir, seed=args.seed, progress_bar="text")
        print(f"wrote {shipped.FOLDER / record['file']} (SHA-256 {record['sha256']}); "
              f"target mIoU {100 * record['target_miou']:.1f}, "
              f"source mIoU {100 * record['source_miou']:.1f}")
        return 0
    record = shipped.entry(shipped.EMBEDDED_PRETRAINED)
    print(f"{shipped.resolve(shipped.reference())}: SHA-256 matches the manifest")
    worst = shipping.first_losses_drift(record)
    print(f"first {len(record['first_losses'])} iterations regenerated: largest relative loss "
          f"difference {worst:.2e}")
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
                   "(segda.experiments.STUDIES: lambda, shift, bn, aux, patch; default: all)")
    p.add_argument("--no-studies", dest="studies", action="store_const", const=[],
                   help="train the main rows only")
    p.add_argument("--reference", nargs="?", const="package", metavar="CSV",
                   help="also write every run to this CSV (without a path: the package's "
                   "lib/segda/reference/embedded_runs.csv, which the notebooks plot against)")
    _add_readme_args(p)

    p = sub.add_parser("variant", help="embedded benchmark: one preset with overrides, paired per seed")
    p.add_argument("preset", help="embedded preset name, e.g. output_adv_single")
    p.add_argument("--name", required=True, help="run folder name under seed<k>/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--run-root", default="runs/embedded")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--pretrained", choices=["shipped", "train"], default="shipped",
                   help="start from the shipped checkpoint (default) or each seed's own pretraining")

    p = sub.add_parser("ensemble", help="embedded benchmark: ensemble of finished runs, per seed")
    p.add_argument("--members", nargs="+", required=True, help="run folder names under seed<k>/")
    p.add_argument("--weights", nargs="+", type=float, help="default: equal weights (ADVENT: 0.5 0.5)")
    p.add_argument("--name", help="run folder of the result (default: the members joined by '+')")
    p.add_argument("--run-root", default="runs/embedded")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])

    p = sub.add_parser("collect", help="table of every finished run under a folder")
    p.add_argument("run_root")
    _add_readme_args(p)

    p = sub.add_parser("ledger", help="evaluate every kept snapshot of runs (seeds grouped): "
                       "last iterate, best snapshot (the papers' rule), mean +/- std, the papers' number")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folders, or folders searched for run folders")
    p.add_argument("--out", help="where ledger.md/.csv go (default: the runs' common folder)")
    p.add_argument("--max-images", type=int, help="validation images (default: the whole split)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="where the validation split is read, e.g. data.root=DIR")

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

    p = sub.add_parser("demo", help="the notebook sequence at demo scale")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")

    # Listed for --help; main hands its arguments to segda.doctor's own parser.
    sub.add_parser("doctor", help="check a dataset folder (the same as python -m segda.doctor)")

    p = sub.add_parser("ship", help="make the shipped source-only checkpoint (or --check it)")
    p.add_argument("--run-dir", default="runs/shipped/source_pretrain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true",
                   help="verify the shipped file's SHA-256 and regenerate its first iterations")
    p.add_argument("--run", metavar="RUN_DIR", help="ship this finished run whole instead "
                   "(the embedded oracle, as notebook 01 trains it: runs/notebooks/seed0/oracle)")
    p.add_argument("--rescore", action="store_true",
                   help="re-evaluate the shipped file, unchanged, on the preset's validation splits "
                   "as rendered now (after a change of the target domain) and record the scores")

    args = parser.parse_args(argv)
    commands = {"train": cmd_train, "eval": cmd_eval, "suite": cmd_suite, "variant": cmd_variant,
                "ensemble": cmd_ensemble, "collect": cmd_collect, "ledger": cmd_ledger,
                "sweep": cmd_sweep, "demo": cmd_demo, "ship": cmd_ship}
    try:
        return commands[args.command](args)
    except (Exception, KeyboardInterrupt) as err:  # the message names the input and the fix
        if not errors.caused_by_user(err):
            raise
        print(f"error: {errors.message(err)}", file=sys.stderr)
        return 1
