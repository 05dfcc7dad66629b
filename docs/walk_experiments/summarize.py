"""Tables of the walk experiments: each run against the control of its seed and setting.

Run folders are ``runs/walk/<setting>/seed<N>/<preset>``, the setting named
``bs<level>_<frozen|train>[_lam1e-3]_<off|patch>`` (label-shift level, 0.5 written 05;
batch-norm mode; discriminator: official or patch verdicts). The control of a run is
``source_only`` of ``bs<level>_frozen_off`` for frozen batch norm and ``source_only_tgt_bn`` of
``bs<level>_train_off`` for training-mode batch norm, same seed. Prints one row per run with
its final target mIoU, the control's, the paired gain, the wall time, and the last logged
diagnostics (discriminator accuracy per domain, target/source gradient-norm ratio); writes the
rows to ``docs/walk_experiments/summary.csv`` and each setting's ``segda.runs.collect`` table to
``docs/walk_experiments/<setting>.csv``.

    PYTHONPATH=lib python docs/walk_experiments/summarize.py [runs/walk]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from segda import runs

OUT = Path(__file__).parent


def _control(setting: str, seed_dir: str, root: Path) -> Path:
    level, bn = setting.split("_")[:2]
    preset = "source_only" if bn == "frozen" else "source_only_tgt_bn"
    return root / f"{level}_{bn}_off" / seed_dir / preset


def _miou(run_dir: Path) -> float | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    return 100 * json.loads(path.read_text())["evals"][-1]["target_miou"]


def _last_diagnostics(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    last = {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}
    out = {k: last[k] for k in last if k.startswith("diag_dacc")}
    if last.get("diag_grad_source") and "diag_grad_target" in last:
        out["grad_tgt/src"] = last["diag_grad_target"] / last["diag_grad_source"]
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/walk")
    rows = []
    for metrics in sorted(root.glob("*/seed*/*/metrics.json")):
        run_dir = metrics.parent
        setting, seed_dir, preset = run_dir.relative_to(root).parts
        m = json.loads(metrics.read_text())
        control = _miou(_control(setting, seed_dir, root))
        miou = _miou(run_dir)
        row = {"setting": setting, "seed": seed_dir[4:], "preset": preset,
               "target_miou": round(miou, 2),
               "control_miou": None if control is None else round(control, 2),
               "gain": None if control is None else round(miou - control, 2),
               "wall_s": round(m["wall_time_s"]), "cpu": m["environment"]["cpu"]}
        row.update({k: round(v, 3) for k, v in _last_diagnostics(run_dir).items()})
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(OUT / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    for setting in sorted({r["setting"] for r in rows}):
        runs.collect(root / setting).to_csv(OUT / f"{setting}.csv", index=False)


if __name__ == "__main__":
    main()
