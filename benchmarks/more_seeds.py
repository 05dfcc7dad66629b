"""More seeds of a few rows, beside the three-seed reference: whether a target the reference
misses by less than its rows' seed spread is missed on more seeds too.

Trains (or reuses) the control, the given rows and their statistics rows (AdaBN of the control
and of each row's final model, :mod:`segda.decomposition`) for each seed, exactly as ``make
suite`` trains a seed (:func:`segda.experiments.run_seed`; the ensemble is scored when both
its members are among the rows), then prints each row's target mIoU per seed and its gain over
AdaBN paired per seed, over these seeds and over these seeds together with the reference's.

    python benchmarks/more_seeds.py --seeds 3 4 --rows advent minent --run-root runs/more_seeds

docs/embedded_benchmark.md ("The targets") quotes its output.
"""

from __future__ import annotations

import argparse

from segda import experiments, narrate, results, rows, runs


def table(run_root: str, seeds: list[int], keys: list[str]):
    """Target mIoU per seed of ``keys`` (and AdaBN) from these runs and the reference."""
    import pandas as pd

    new = runs.collect(run_root)
    new["key"] = rows.keys(new)
    ref = results.read_reference()
    both = pd.concat([ref.assign(source="reference"), new.assign(source="this script")])
    both = both[both["key"].isin([rows.ADABN, *keys])]
    return both.pivot_table(index="seed", columns="key", values="target_miou").round(2), \
        sorted(set(new["seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--rows", nargs="+", default=["advent", "minent"],
                        help="adaptation rows (the control is always trained)")
    parser.add_argument("--run-root", default="runs/more_seeds")
    args = parser.parse_args()
    unknown = [r for r in args.rows if r not in rows.adaptation()]
    if unknown:
        parser.error(f"--rows: unknown rows {unknown}; known: {rows.adaptation()}")
    presets = [rows.control(), *[r for r in args.rows if r != rows.control()]]
    for seed in args.seeds:
        experiments.run_seed(args.run_root, seed, presets=presets, oracle=False)
    keys = [*args.rows]
    if all(m in args.rows for m in rows.ensemble().members):
        keys.append(rows.ensemble().key)
    per_seed, new_seeds = table(args.run_root, args.seeds, keys)
    print(per_seed.to_string())
    for key in keys:
        gains = (per_seed[key] - per_seed[rows.ADABN]).dropna()
        for which, chosen in (("these seeds", gains[gains.index.isin(new_seeds)]),
                              ("every seed", gains)):
            print(f"{rows.label(key)} against AdaBN, {which} ({len(chosen)}): "
                  f"mean {chosen.mean():+.2f}; "
                  f"{narrate.verdict(chosen.tolist(), rows.label(rows.ADABN))} "
                  f"({', '.join(narrate.signed(g) for g in chosen)})")


if __name__ == "__main__":
    main()
