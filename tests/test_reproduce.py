"""The reproducer's path, end to end on miniature datasets: every command of the README's
reproduction section (its ``<!-- segda:reproduce NAME ... -->`` blocks) runs here, the cluster
block on a SLURM cluster in tests/test_cluster.py.

The commands below are the README's, line for line; :func:`test_readme_commands_are_the_tested_ones`
fails when the README and this file differ, so neither can change without the other. The
end-to-end test runs them with bash from a scratch folder that holds what the real path expects
under the repository root: ``data/`` (the miniature trees, written and prepared by the
"miniature" block), ``weights/`` (the miniature's official-keys init under the file names the
presets read; a random VGG-16 DeepLab state dict for the VGG-16 presets) and ``notebooks/``.
Each command gets only these additions, appended to its line: size and length (2 iterations,
64x32 images, 2 validation images; one snapshot per iteration for AdvEnt so that the ledger has
two), the CPU, and the miniature's list files (the real datasets use the official lists).
"""

# ruff: noqa: E501  (the command lines are the README's, verbatim)
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

MINIATURE = [
    "M=/tmp/segda_mini",
    "python data_scripts/make_miniature.py --out $M",
    "python data_scripts/prepare_gta5.py --root $M/GTA5 --list $M/lists/gta5_train.txt",
    "python data_scripts/prepare_cityscapes.py --root $M/Cityscapes --list train=$M/lists/cityscapes_train.txt --list val=$M/lists/cityscapes_val.txt",
    "python data_scripts/prepare_synthia.py --root $M/SYNTHIA --list $M/lists/synthia_train.txt",
    "python -m segda.doctor --dataset gta5 --root $M/GTA5 --list $M/lists/gta5_train.txt",
    "python -m segda.doctor --dataset cityscapes --root $M/Cityscapes --list train=$M/lists/cityscapes_train.txt --list val=$M/lists/cityscapes_val.txt",
    "python -m segda.doctor --dataset synthia --root $M/SYNTHIA --list $M/lists/synthia_train.txt",
    'S="--set data.root=$M --set data.source_list=$M/lists/gta5_train.txt --set data.target_list=$M/lists/cityscapes_train.txt --set data.val_list=$M/lists/cityscapes_val.txt"',
    "python -m segda train paper/advent --run-dir $M/runs/advent $S --set model.init_checkpoint=$M/weights/DeepLab_resnet_pretrained_init_miniature.pth --set 'data.source_size=[64,32]' --set 'data.target_size=[64,32]' --set optim.early_stop=2 --set run.checkpoint_every=1",
    "python -m segda eval --checkpoint $M/runs/advent/last.pth",
    "python -m segda ledger $M/runs/advent",
]
PAPER = [
    "mkdir -p runs/paper",
    'P="-p dataset gta5_cityscapes -p data_root data -p device cuda -p eval_images None -p max_iters None -p run_dir $PWD/runs/paper"',
    "papermill notebooks/01_source_only.ipynb runs/paper/01.ipynb -p preset paper/source_only $P",
    "papermill notebooks/02_feature_adversarial.ipynb runs/paper/02.ipynb -p preset paper/feature_adv $P",
    "papermill notebooks/03_output_space_single.ipynb runs/paper/03.ipynb -p preset paper/adaptsegnet_single $P",
    "papermill notebooks/04_output_space_multi.ipynb runs/paper/04.ipynb -p preset paper/adaptsegnet_multi $P",
    "papermill notebooks/05_minent.ipynb runs/paper/05.ipynb -p preset paper/minent $P",
    "papermill notebooks/06_advent.ipynb runs/paper/06.ipynb -p preset paper/advent $P",
    "papermill notebooks/03_output_space_single.ipynb runs/paper/03_vgg16.ipynb -p preset paper/adaptsegnet_vgg_single $P",
    "papermill notebooks/07_ensemble_and_results.ipynb runs/paper/07.ipynb -p preset paper/advent $P",
]
SEEDS = [
    "python -m segda train paper/source_only --run-dir runs/paper/seed1/source_only --set run.seed=1",
    "python -m segda train paper/source_only_tgt_bn --run-dir runs/paper/seed1/source_only_tgt_bn --set run.seed=1",
    "python -m segda train paper/oracle --run-dir runs/paper/seed1/oracle --set run.seed=1",
    "python -m segda train paper/feature_adv --run-dir runs/paper/seed1/feature_adv --set run.seed=1",
    "python -m segda train paper/adaptsegnet_single --run-dir runs/paper/seed1/adaptsegnet_single --set run.seed=1",
    "python -m segda train paper/adaptsegnet_multi --run-dir runs/paper/seed1/adaptsegnet_multi --set run.seed=1",
    "python -m segda train paper/adaptsegnet_lsgan_single --run-dir runs/paper/seed1/adaptsegnet_lsgan_single --set run.seed=1",
    "python -m segda train paper/adaptsegnet_vgg_single --run-dir runs/paper/seed1/adaptsegnet_vgg_single --set run.seed=1",
    "python -m segda train paper/minent --run-dir runs/paper/seed1/minent --set run.seed=1",
    "python -m segda train paper/advent --run-dir runs/paper/seed1/advent --set run.seed=1",
    "python -m segda train paper/minent_vgg_cp --run-dir runs/synthia/seed1/minent_vgg_cp --set run.seed=1",
    "python -m segda train paper/advent_vgg_cp --run-dir runs/synthia/seed1/advent_vgg_cp --set run.seed=1",
    "python -m segda eval --checkpoint runs/paper/seed1/advent/last.pth",
    "python -m segda eval --checkpoint runs/paper/seed1/advent/last.pth runs/paper/seed1/minent/last.pth --weights 0.5 0.5",
    "python -m segda ledger runs/paper runs/synthia",
]
# Run on a SLURM cluster by tests/test_cluster.py (the same miniature workspace).
CLUSTER = [
    "python -m segda sweep --train --presets paper --seeds 0 1 2 --out runs/cluster --executor slurm --slurm-partition gpu --gpus-per-job 1 --cpus-per-job 8 --time 1-00:00:00",
    "python -m segda sweep --status runs/cluster",
    "python -m segda sweep --status runs/cluster --wait",
    "python -m segda collect runs/cluster",
    "python -m segda ledger runs/cluster",
]
BLOCKS = {"miniature": MINIATURE, "paper": PAPER, "seeds": SEEDS, "cluster": CLUSTER}

# The additions: size and length, the CPU, and where the miniature's subsets are listed.
ITERS, SIZE, IMAGES = 2, [64, 32], 2
LISTS = {"gta5_cityscapes": "lists/gta5_train.txt", "synthia_cityscapes": "lists/synthia_train.txt"}


def readme_blocks(text: str) -> dict[str, list[str]]:
    """The command lines of every ``<!-- segda:reproduce NAME ... -->`` fenced block."""
    found = re.findall(r"<!-- segda:reproduce (\w+)[^>]*-->\n```[a-z]*\n(.*?)```", text, re.S)
    return {name: [line for line in body.splitlines() if line.strip()] for name, body in found}


def test_readme_commands_are_the_tested_ones():
    blocks = readme_blocks((REPO / "README.md").read_text())
    assert blocks == BLOCKS, (
        "README.md's reproduction commands and tests/test_reproduce.py's differ: change both "
        "(the test runs exactly these lines on the miniature datasets)")


def _lists(dataset: str, data: Path) -> dict[str, str]:
    return {"data.source_list": str(data / LISTS[dataset]),
            "data.target_list": str(data / "lists/cityscapes_train.txt"),
            "data.val_list": str(data / "lists/cityscapes_val.txt")}


def _with_additions(line: str, data: Path) -> str:
    """The command line with this test's additions appended (nothing else changes)."""
    words = shlex.split(line)
    if words[0] == "papermill":
        yaml = json.dumps({"image_size": SIZE, "overrides": _lists("gta5_cityscapes", data)})
        return (f"{line} -p max_iters {ITERS} -p eval_images {IMAGES} -p device cpu "
                f"-y {shlex.quote(yaml)}")
    if words[:4] == ["python", "-m", "segda", "train"]:
        from segda import config

        sets = {"optim.early_stop": ITERS, "data.source_size": f"[{SIZE[0]},{SIZE[1]}]",
                "data.target_size": f"[{SIZE[0]},{SIZE[1]}]", "run.eval_max_images": IMAGES,
                "run.device": "cpu", **_lists(config.load(words[4]).data.dataset, data)}
        if words[4] == "paper/advent":
            sets["run.checkpoint_every"] = 1  # two snapshots for the ledger
        return line + "".join(f" --set {shlex.quote(f'{k}={v}')}" for k, v in sets.items())
    if words[:4] in (["python", "-m", "segda", "eval"], ["python", "-m", "segda", "ledger"]):
        return f"{line} --max-images {IMAGES} --device cpu"
    return line


def _bash(lines: list[str], cwd: Path) -> str:
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    # One thread per command, as conftest.py sets for the tests (SEGDA_TEST_THREADS to change).
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": os.environ.get(
        "SEGDA_TEST_THREADS", "1"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode}; last output:\n{out[-6000:]}"
    return out


def make_workspace(ws: Path) -> Path:
    """The miniature block, run as written (its folder M set to <ws>/data), then the files the
    paper presets read relative to the repository root (the ``workspace`` fixture of
    conftest.py, shared with tests/test_cluster.py)."""
    lines = [f"M={ws / 'data'}" if line == MINIATURE[0] else line for line in MINIATURE]
    out = _bash(lines, REPO)
    assert "| last iterate (segda's number) |" in out
    (ws / "notebooks").symlink_to(REPO / "notebooks")
    weights = ws / "weights"
    weights.mkdir()
    init = ws / "data" / "weights" / "DeepLab_resnet_pretrained_init_miniature.pth"
    for name in ("DeepLab_resnet_pretrained_init-f81d91e8.pth", "DeepLab_resnet_pretrained_imagenet.pth"):
        (weights / name).symlink_to(init)
    from segda import models

    torch.manual_seed(0)
    vgg = models.build_segmenter("deeplab_vgg16", 19, False, 2)
    torch.save(vgg.state_dict(), weights / "vgg16_imagenet_deeplab.pth")
    return ws


@pytest.mark.slow
def test_every_readme_command_runs_on_the_miniature_datasets(workspace):
    ws, data = workspace, workspace / "data"
    _bash([_with_additions(line, data) for line in PAPER + SEEDS], ws)
    # the notebooks' runs went where the README says (run_dir $PWD/runs/paper), not into notebooks/
    assert not (REPO / "notebooks" / "runs").exists()

    from segda import runs

    # every paper row trained: seed 0 by the notebooks, seed 1 by the train command
    seed0 = {"source_only", "source_only_tgt_bn", "oracle", "feature_adv", "adaptsegnet_single",
             "adaptsegnet_multi", "minent", "minent_vgg_cp", "advent", "adaptsegnet_vgg_single"}
    trained = {p.parent.relative_to(ws / "runs").as_posix()
               for p in (ws / "runs").rglob("last.pth")}
    assert trained == ({f"paper/seed0/{n}" for n in seed0}
                       | {f"paper/seed1/{c.split()[4].split('/')[1]}" for c in SEEDS[:10]}
                       | {"synthia/seed1/minent_vgg_cp", "synthia/seed1/advent_vgg_cp"})
    for run in trained:
        assert runs.read_metrics(ws / "runs" / run)["iteration"] == ITERS
    assert runs.read_config(ws / "runs/paper/seed0/adaptsegnet_vgg_single").model.name == "deeplab_vgg16"
    assert runs.read_config(ws / "runs/paper/seed1/advent").model.name == "deeplabv2_resnet101"

    # 07: the results table of every row and the ensemble, and the papers' numbers
    results = (ws / "runs/paper/results.md").read_text()
    for row in ("| AdaptSegNet single-level |", "| AdaptSegNet multi-level |", "| AdvEnt |",
                "| AdvEnt + MinEnt (ensemble) |", "| oracle (target-trained) |"):
        assert row in results
    nb07 = json.loads((ws / "runs/paper/07.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in nb07["cells"] for o in c.get("outputs", []))
    assert "paper mIoU" in printed and "43.8" in printed

    # the ledger: every set, AdvEnt over its two seeds with hand-checkable values
    table = pd.read_csv(ws / "runs" / "ledger.csv", dtype={"seed": str}).fillna({"seed": ""})
    snaps = pd.read_csv(ws / "runs" / "ledger_snapshots.csv")
    advent = snaps[snaps["run"].str.endswith("/advent")].sort_values(["seed", "updates"])
    assert list(zip(advent["seed"], advent["updates"], advent["official"])) == [
        (0, 2, "model_1"), (1, 1, "model_0"), (1, 2, "model_1")]
    rows = table[table["set"] == "advent"].set_index(["row", "seed"])
    last = advent[advent["updates"] == 2].set_index("seed")["miou"]
    assert rows.loc[("last", "mean"), "miou"] == pytest.approx(last.mean())
    assert rows.loc[("last", "std"), "miou"] == pytest.approx(last.std(ddof=1))
    assert rows.loc[("best", "1"), "miou"] == pytest.approx(advent[advent["seed"] == 1]["miou"].max())
    assert rows.loc[("papers", ""), "miou"] == 43.8
    # the eval command's table (written beside the checkpoint) agrees with the ledger
    evaluated = pd.read_csv(ws / f"runs/paper/seed1/advent/eval_last_gta5_cityscapes_{IMAGES}img_19cls.csv",
                            index_col=0)
    assert evaluated["mIoU"].iloc[0] == pytest.approx(last.loc[1], abs=0.05)
    ensemble = list((ws / "runs/paper/seed1/advent").glob("eval_advent-last+minent-last_*_19cls.md"))
    assert ensemble, "the ensemble's table"
    ledger_md = (ws / "runs" / "ledger.md").read_text()
    assert "### AdvEnt (advent): deeplabv2_resnet101, gta5_cityscapes" in ledger_md
    # 05's GTA5 run and the SYNTHIA run of paper/minent_vgg_cp are two sets, named apart
    assert {"minent_vgg_cp (gta5_cityscapes)", "minent_vgg_cp (synthia_cityscapes)"} <= set(table["set"])
    assert ledger_md.count("### ") == len(set(table["set"]))
