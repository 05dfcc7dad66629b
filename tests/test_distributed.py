"""Data-parallel training: two CPU processes (gloo) stay identical, draw different images, and
resume exactly; the torchrun entry point runs."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from segda import checkpointing, config, distributed, io, train
from segda.data import loaders, registry
from segda.data.loaders import InfiniteSampler

N = 2  # iterations before the interruption; the straight run does 2N


def _cfg():
    return config.load("embedded/advent", {
        "data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.optimizer": "sgd", "optim.param_groups": "official", "optim.lr": 1e-3,
        "optim.max_iters": 10, "optim.early_stop": 2 * N, "method.disc_ndf": 8,
        "run.device": "cpu", "run.progress": False, "run.log_every": 1,
        "run.checkpoint_every": N, "run.eval_max_images": 3,
    })


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Recording(torch.utils.data.Dataset):
    """Records which items this process reads (the loader runs in-process: no workers)."""

    def __init__(self, dataset):
        self.dataset, self.keys = dataset, []

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        self.keys.append(int(key))
        return self.dataset[key]


def _state(result):
    out = {f"seg.{k}": v.clone() for k, v in result.seg.state_dict().items()}
    for lvl, d in result.state.discs.items():
        out.update({f"disc_{lvl}.{k}": v.clone() for k, v in d.state_dict().items()})
    return out


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = distributed.init_from_env(device="cpu")
    saves = []
    real_save = io.save_atomic

    def counting_save(obj, path):
        saves.append(str(path))
        return real_save(obj, path)

    io.save_atomic = counting_save
    cfg = _cfg()
    base = registry.build_datasets(cfg.data, cfg.model)
    src = _Recording(base.train_source)
    data = base.replace(train_source=src)
    straight = train.fit(cfg, os.path.join(out_dir, "straight"), data=data, dist=ctx)
    keys_straight = list(src.keys)
    train.fit(cfg, os.path.join(out_dir, "split"), data=data, dist=ctx, stop_at=N)
    resumed = train.fit(cfg, os.path.join(out_dir, "split"), data=data, dist=ctx)
    torch.save({
        "straight": _state(straight), "resumed": _state(resumed),
        "history_straight": straight.state.history, "history_resumed": resumed.state.history,
        "keys": keys_straight, "saves": saves, "evals": straight.state.evals,
    }, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_rank_sampler_splits_the_single_process_stream():
    size, b, w, seed = 23, 2, 3, 5
    single = iter(InfiniteSampler(size, seed=seed))
    ranks = [iter(loaders.RankSampler(size, b, r, w, seed=seed)) for r in range(w)]
    for _ in range(12):  # iterations, across several epochs
        expected = [next(single) for _ in range(b * w)]
        got = [next(it) for it in ranks for _ in range(b)]
        assert got == expected
    resumed = iter(loaders.RankSampler(size, b, 1, w, seed=seed, start_iter=12))
    again = iter(loaders.RankSampler(size, b, 1, w, seed=seed))
    for _ in range(12 * b):
        next(again)
    assert [next(resumed) for _ in range(10)] == [next(again) for _ in range(10)]


def test_two_ranks_stay_identical_draw_different_images_and_resume_exactly(tmp_path):
    world, port = 2, _free_port()
    mp.spawn(_worker, args=(world, port, str(tmp_path)), nprocs=world, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world))
    # Identical weights, buffers (batch-norm statistics averaged) and logged means on both ranks.
    for k in r0["straight"]:
        assert torch.equal(r0["straight"][k], r1["straight"][k]), k
    assert r0["history_straight"] == r1["history_straight"]
    assert repr(r0["evals"]) == repr(r1["evals"])  # repr: NaN IoUs compare equal
    assert 0 <= r0["evals"][-1]["target_miou"] <= 1
    # Different images: per iteration the two ranks' batches are disjoint and together form
    # the single-process stream with twice the batch.
    b = _cfg().data.batch_size
    stream = iter(InfiniteSampler(len(registry.build_datasets(_cfg().data).train_source),
                                  seed=_cfg().run.seed))
    for it in range(2 * N):
        k0, k1 = r0["keys"][it * b:(it + 1) * b], r1["keys"][it * b:(it + 1) * b]
        assert not set(k0) & set(k1)
        assert k0 + k1 == [next(stream) for _ in range(2 * b)]
    # N iterations, interruption, resume for N more = 2N straight, bitwise.
    for r in (r0, r1):
        for k in r["straight"]:
            assert torch.equal(r["straight"][k], r["resumed"][k]), k
        assert r["history_straight"] == r["history_resumed"]
    # Only rank 0 writes checkpoints.
    assert r0["saves"] and not r1["saves"]
    ckpt = checkpointing.load_run_checkpoint(tmp_path / "split" / "last.pth")
    assert ckpt["world_size"] == world and ckpt["iteration"] == 2 * N


def test_resume_with_another_world_size_is_refused(tmp_path):
    cfg = _cfg().replace({"optim.early_stop": 1, "run.checkpoint_every": 0})
    train.fit(cfg, tmp_path / "run", data=registry.build_datasets(cfg.data, cfg.model))
    blob = checkpointing.load_run_checkpoint(tmp_path / "run" / "last.pth")
    blob["world_size"] = 2
    io.save_atomic(blob, tmp_path / "run" / "last.pth")
    with pytest.raises(ValueError, match="over 2 process"):
        train.fit(cfg, tmp_path / "run", data=registry.build_datasets(cfg.data, cfg.model))


def test_torchrun_entry_point(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "segda", "train", "embedded/minent", "--run-dir", str(tmp_path / "run"),
        "--set", "data.source_size=[64, 32]", "--set", "data.target_size=[64, 32]",
        "--set", "data.batch_size=2", "--set", "optim.early_stop=2", "--set", "optim.max_iters=10",
        "--set", "run.device=cpu", "--set", "run.progress=false", "--set", "run.eval_max_images=2",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "effective batch 4" in done.stdout and "done: iteration 2" in done.stdout
    ckpt = checkpointing.load_run_checkpoint(tmp_path / "run" / "last.pth")
    assert ckpt["world_size"] == 2 and ckpt["iteration"] == 2
    assert (tmp_path / "run" / "metrics.json").exists()
