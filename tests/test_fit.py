"""The training loop: exact resume, atomic checkpoints, non-finite losses, run folders."""

import json

import pytest
import torch

from segda import checkpointing, config, io, losses, runs, train, trainlog
from segda.data import registry


def _cfg(method="advent", iters=4, **extra):
    overrides = {
        "method.name": method, "method.levels": "multi",
        "data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.max_iters": 10, "optim.early_stop": iters, "method.disc_ndf": 8,
        "run.device": "cpu", "run.progress": False, "run.log_every": 1,
        "run.eval_max_images": 4,
    }
    overrides.update(extra)
    return config.load("embedded/advent", overrides)


@pytest.fixture(scope="module")
def small_data():
    cfg = _cfg()
    return registry.build_datasets(cfg.data, cfg.model)


@pytest.mark.parametrize("param_groups", ["unique", "official"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_is_exact(tmp_path, small_data, optimizer, param_groups):
    n = 2
    cfg = _cfg(iters=2 * n, **{"optim.optimizer": optimizer, "optim.param_groups": param_groups,
                               "run.checkpoint_every": n})
    straight = train.fit(cfg, tmp_path / "straight", data=small_data)
    train.fit(cfg, tmp_path / "split", data=small_data, stop_at=n)
    interrupted = checkpointing.load_run_checkpoint(tmp_path / "split" / "last.pth")
    assert interrupted["iteration"] == n
    resumed = train.fit(cfg, tmp_path / "split", data=small_data)
    a, b = straight.seg.state_dict(), resumed.seg.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for lvl in straight.state.discs:
        da, db = straight.state.discs[lvl].state_dict(), resumed.state.discs[lvl].state_dict()
        assert all(torch.equal(da[k], db[k]) for k in da)
    assert [h["iteration"] for h in resumed.state.history] == list(range(2 * n))
    assert straight.state.history == resumed.state.history


def test_checkpoint_contents_and_weights_only_load(tmp_path, small_data):
    cfg = _cfg(iters=2, **{"run.checkpoint_every": 1})
    train.fit(cfg, tmp_path / "run", data=small_data)
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert {"segmenter", "discriminators", "opt_seg", "opt_discs", "iteration", "rng",
            "config", "history", "evals"} <= set(ckpt)
    assert config.from_dict(ckpt["config"]) == cfg
    assert not list((tmp_path / "run").glob("*.tmp"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["method"] == "advent" and 0 <= metrics["evals"][-1]["target_miou"] <= 1


def test_save_atomic_keeps_previous_file_on_failure(tmp_path):
    path = tmp_path / "ck.pth"
    io.save_atomic({"a": torch.zeros(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        io.save_atomic({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pth"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, small_data, monkeypatch):
    cfg = _cfg(method="minent", iters=6, **{"run.checkpoint_every": 2})
    calls = {"n": 0}
    real_entropy = losses.entropy_loss

    def poisoned(prob):
        calls["n"] += 1
        value = real_entropy(prob)
        return value * float("nan") if calls["n"] > 6 else value  # 2 levels per iteration

    monkeypatch.setattr(losses, "entropy_loss", poisoned)
    with pytest.raises(trainlog.NonFiniteLossError, match="iteration 3.*last.pth"):
        train.fit(cfg, tmp_path / "run", data=small_data)
    ckpt = checkpointing.load_run_checkpoint(tmp_path / "run" / "last.pth")
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["segmenter"].values() if v.is_floating_point())


def test_ensure_run_reuses_finished_runs_and_refuses_other_configs(tmp_path, small_data):
    cfg = _cfg(method="source_only", iters=2)
    first = train.ensure_run(tmp_path / "r", cfg, data=small_data)
    again = train.ensure_run(tmp_path / "r", cfg, data=small_data)
    a, b = first.seg.state_dict(), again.seg.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="optim.lr"):
        train.ensure_run(tmp_path / "r", cfg.replace({"optim.lr": 0.1}), data=small_data)
    table = runs.collect(tmp_path)
    assert list(table["method"]) == ["source_only"]


def test_wall_time_is_recorded_and_summed_over_resumes(tmp_path, small_data):
    import time

    cfg = _cfg(method="source_only", iters=4, **{"run.checkpoint_every": 2})
    t0 = time.perf_counter()
    train.fit(cfg, tmp_path / "r", data=small_data, stop_at=2)
    first_call = time.perf_counter() - t0
    first = checkpointing.load_run_checkpoint(tmp_path / "r" / "last.pth")["wall_time_s"]
    assert 0 < first <= first_call
    t1 = time.perf_counter()
    train.fit(cfg, tmp_path / "r", data=small_data)
    second_call = time.perf_counter() - t1
    total = json.loads((tmp_path / "r" / "metrics.json").read_text())["wall_time_s"]
    assert first < total <= first + second_call + 1e-3
    assert runs.collect(tmp_path)["wall_time_s"].iloc[0] == total


def test_write_results_writes_the_table_and_one_line_per_run(tmp_path, small_data):
    import pandas as pd

    from segda import results

    with pytest.raises(RuntimeError, match=str(tmp_path)):
        results.write_results(tmp_path)
    cfg = _cfg(method="source_only", iters=1)
    result = train.ensure_run(tmp_path / "seed0" / "source_only", cfg, data=small_data)
    text = results.write_results(tmp_path)
    per_run = pd.read_csv(tmp_path / "runs.csv")
    assert list(per_run["method"]) == ["source_only"]
    table = pd.read_csv(tmp_path / "results.csv", index_col=0)
    expected = 100 * result.final_eval["target_miou"]
    assert table["target mIoU"].iloc[0] == pytest.approx(expected, abs=1e-9)
    assert (tmp_path / "results.md").read_text() == text + "\n"
    assert f"{expected:.1f}" in text

    from segda import cli

    readme = tmp_path / "README.md"
    readme.write_text("intro\n" + results.README_BEGIN.format(name="embedded") + "\n"
                      + results.README_END.format(name="embedded") + "\noutro\n")
    assert cli.main(["collect", str(tmp_path), "--readme", str(readme)]) == 0
    written = readme.read_text()
    assert written.startswith("intro\n") and written.endswith("\noutro\n")
    assert f"| source-only (control) | {expected:.1f} |" in written
    assert "Training wall time recorded for 1 of 1 runs" in written


def test_warm_start_from_run_checkpoint_and_missing_init(tmp_path, small_data):
    cfg = _cfg(method="source_only", iters=1)
    first = train.fit(cfg, tmp_path / "a", data=small_data)
    warm = cfg.replace({"model.init_checkpoint": str(tmp_path / "a" / "last.pth")})
    second = train.fit(warm, None, data=small_data, stop_at=0)  # load the start, train nothing
    a, b = first.seg.state_dict(), second.seg.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    missing = cfg.replace({"model.init_checkpoint": str(tmp_path / "nope.pth")})
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        train.fit(missing, None, data=small_data)
