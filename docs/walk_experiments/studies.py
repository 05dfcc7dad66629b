"""The studies behind the embedded defaults, as Markdown tables from the three-seed reference
(``segda.experiments.STUDIES``, trained by ``make suite``; each gain paired per seed with the
control of the same setting), and the main rows' step diagnostics over the last 20 iterations.

    PYTHONPATH=lib python docs/walk_experiments/studies.py [runs/embedded]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from segda import experiments, notebook, results


def study_markdown(reference) -> str:
    out = []
    for name, study in experiments.STUDIES.items():
        table = results.study_table(reference, study)
        out.append(f"**{name}**\n")
        out.append("| run | setting | control | target mIoU | gain: mean +/- std (per seed) | verdict |")
        out.append("|---|---|---|---|---|---|")
        for run, r in table.iterrows():
            gain = "-" if run == r["control"] else (
                f"{r['gain']:+.1f} +/- {r['gain std']:.1f} ({r['gains per seed']})")
            out.append(f"| `{run}` | {r['setting']} | `{r['control']}` | {r['target mIoU']:.1f} | "
                       f"{gain} | {r['verdict']} |")
        out.append("")
    return "\n".join(out)


def diagnostics_markdown(root: Path) -> str:
    rows = []
    for history in sorted(root.glob("seed*/*/history.csv")):
        df = pd.read_csv(history)
        if not any(c.startswith("diag_") for c in df.columns):
            continue
        summary = notebook.diagnostics_summary(df)
        rows.append({"run": history.parent.name, "seed": history.parent.parent.name, **summary})
    if not rows:
        return ""
    df = pd.DataFrame(rows)
    cols = [c for c in df.columns if c.startswith("diag_dacc") or c == "target / source gradient"]
    mean = df.groupby("run")[cols].mean()
    lines = ["| run (mean over seeds) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| `{run}` | " + " | ".join(f"{v:.2f}" for v in r) + " |" for run, r in mean.iterrows()]
    return "\n".join(lines)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    print(study_markdown(results.read_reference()))
    if root is not None:
        print(diagnostics_markdown(root))
