"""Two notebooks of one run_dir share their rows: one that finds a row being trained by
another process waits for it and reuses it, instead of failing or training it twice."""

import subprocess
import sys
import time
from pathlib import Path

import torch

from segda import config, notebook, runs, train

TINY = {"data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.max_iters": 3, "optim.early_stop": 3, "run.device": "cpu", "run.progress": False,
        "run.eval_max_images": 2, "model.init_checkpoint": ""}

TRAIN_ELSEWHERE = """
import sys, time
from segda import config, runs, train
cfg = config.load("embedded/source_only", {TINY!r})
with runs.lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(2)  # hold the folder a while before training, as a long run would
    train.fit(cfg, sys.argv[1], progress_bar="none")
"""


def test_a_row_being_trained_elsewhere_is_awaited_and_reused(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "seed0" / "source_only"
    cfg = config.load("embedded/source_only", TINY)
    other = subprocess.Popen([sys.executable, "-c", TRAIN_ELSEWHERE.format(TINY=TINY), str(folder)],
                             stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "locked"

    fit, finished_fits = train.fit, []

    def fit_here(*args, **kwargs):  # every try here must find the folder locked
        result = fit(*args, **kwargs)
        finished_fits.append(result)
        return result

    monkeypatch.setattr(train, "fit", fit_here)
    started = time.perf_counter()
    result = notebook.when_free(folder, lambda: train.ensure_run(folder, cfg), poll_s=0.2)
    assert other.wait(timeout=120) == 0
    assert finished_fits == []  # the row was trained once, by the other process
    assert time.perf_counter() - started > 1.5  # it waited for the other process
    said = capsys.readouterr().out
    assert said.count("waiting:") == 1 and str(folder) in said and "reuses the run" in said
    assert runs.is_complete(folder, cfg) and result.state.iteration == 3
    on_disk = train.load_run(folder).seg.state_dict()
    assert all(torch.equal(v, on_disk[k]) for k, v in result.seg.state_dict().items())


TRAIN_ROW_ELSEWHERE = """
import sys, time
from segda import notebook, runs, train
cfg = notebook.notebook_config("embedded/source_only", **{params!r})
with runs.lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(2)
    train.fit(cfg, sys.argv[1], progress_bar="none")
"""


def test_train_rows_trains_its_other_rows_while_one_is_trained_elsewhere(
        tmp_path, monkeypatch, capsys):
    """A notebook whose first row is being trained by another process trains its next row
    meanwhile and only then waits for the first; the result keeps the presets' order."""
    run_dir = tmp_path / "runs"
    params = {"image_size": [64, 32], "batch_size": 2, "max_iters": 3, "eval_images": 2,
              "device": "cpu", "seed": 0}
    cfg = notebook.notebook_config("embedded/source_only", **params)
    folder = notebook.run_folder(run_dir, "embedded/source_only", 0, cfg)
    other = subprocess.Popen(
        [sys.executable, "-c", TRAIN_ROW_ELSEWHERE.format(params=params), str(folder)],
        stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "locked"

    fit, fits_here = train.fit, []

    def fit_here(cfg, run_dir, *args, **kwargs):
        # what this process trains, and whether the other process had finished by then
        other_done = (folder / runs.METRICS).exists()
        result = fit(cfg, run_dir, *args, **kwargs)  # raises while the other holds the lock
        fits_here.append((Path(run_dir).name, other_done))
        return result

    monkeypatch.setattr(train, "fit", fit_here)
    rows = notebook.train_rows(["embedded/source_only", "embedded/source_only_tgt_bn"], run_dir,
                               progress_bar="none", **params)
    assert other.wait(timeout=120) == 0
    assert list(rows) == ["source_only", "source_only_tgt_bn"]
    # only the second row trained here, while the other process still held the first
    assert fits_here == [("source_only_tgt_bn", False)]
    assert capsys.readouterr().out.count("waiting:") == 1
    assert Path(rows["source_only"].run_dir) == folder and rows["source_only"].state.iteration == 3
    assert rows["source_only_tgt_bn"].state.iteration == 3
