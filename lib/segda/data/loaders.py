"""Infinite, resumable data streams.

The official scripts repeat the image list ``max_iters`` times and shuffle it with an unseeded
DataLoader, so no two runs see the same order and a restarted run starts over (AdaptSegNet#19).
Here the index stream is a pure function of ``(seed, position)``: position ``p`` falls in epoch
``p // n``, whose order is a permutation seeded by ``(seed, epoch)``. A run that stopped after
iteration ``k`` resumes exactly by building its loader with ``start_iter=k``.

Datasets that set ``keyed_flip = True`` (the real datasets) receive ``(index, position)`` keys so
that their random mirror is keyed by the draw too; others receive plain indices.

In a data-parallel run, rank ``r`` of ``W`` with a per-rank batch ``B`` takes, at iteration
``k``, positions ``[(kW + r) B, (kW + r + 1) B)`` of the same stream (:class:`RankSampler`): the
ranks draw different images, and together they see at iteration ``k`` exactly batch ``k`` of a
single-process run with batch ``W * B``, in the same order. :func:`device_batches` is the
stream the fit loop draws: a loader's batches on the training device.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from segda.methods import Batch

if TYPE_CHECKING:
    from segda.config import TrainConfig


def epoch_permutation(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch ``epoch``: a permutation of ``range(size)`` fixed by (seed, epoch)."""
    state = np.random.SeedSequence([0xDA7A, seed, epoch]).generate_state(2, dtype=np.uint32)
    gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(size, generator=gen)


class InfiniteSampler(Sampler):
    """Endless indices (or ``(index, position)`` pairs) starting at stream position ``start``.

    Stateless: the element at position ``p`` depends only on ``(size, seed, shuffle, p)``.
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        start: int = 0,
        shuffle: bool = True,
        with_position: bool = False,
    ) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.size, self.seed, self.start = size, seed, start
        self.shuffle, self.with_position = shuffle, with_position

    def __iter__(self) -> Iterator:
        position = self.start
        epoch, offset = divmod(position, self.size)
        while True:
            order = epoch_permutation(self.size, self.seed, epoch).tolist() if self.shuffle else (
                range(self.size)
            )
            for i in range(offset, self.size):
                yield (order[i], position) if self.with_position else order[i]
                position += 1
            epoch, offset = epoch + 1, 0


class RankSampler(Sampler):
    """Rank ``rank``'s share of the stream of :class:`InfiniteSampler` (see the module docstring).

    Iteration ``k`` of rank ``r`` gets the ``B`` stream positions ``[(kW + r) B, (kW + r + 1) B)``,
    so the ranks' batches at iteration ``k`` concatenate to batch ``k`` of the single-process
    stream with batch ``W * B``. With one rank it is the single-process stream itself.
    """

    def __init__(
        self, size: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
        start_iter: int = 0, shuffle: bool = True, with_position: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.stream = InfiniteSampler(size, seed=seed, start=start_iter * batch_size * world_size,
                                      shuffle=shuffle, with_position=with_position)

    def __iter__(self) -> Iterator:
        it = iter(self.stream)
        b, lo = self.batch_size, self.rank * self.batch_size
        while True:
            chunk = [next(it) for _ in range(b * self.world_size)]
            yield from chunk[lo : lo + b]


def worker_init_fn(worker_id: int) -> None:
    """Seed python, numpy and torch in a worker from the seed the DataLoader gave it.

    The DataLoader derives each worker's torch seed from its own generator (seeded by
    :func:`build_loader`) plus the worker id, so worker randomness is reproducible too.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int = 0,
    start_iter: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    shuffle: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[dict]:
    """An endless iterator of collated batches; batch ``k`` is the same for any ``start_iter <= k``.

    Every batch is full (the stream never ends, so there is no last partial batch). ``rank`` /
    ``world_size``: this process's share in a data-parallel run (:class:`RankSampler`).
    """
    sampler = RankSampler(
        len(dataset), batch_size, rank, world_size, seed=seed, start_iter=start_iter,
        shuffle=shuffle, with_position=bool(getattr(dataset, "keyed_flip", False)),
    )
    # Worker seeds: the run's seed on one process; one seed per rank in a data-parallel run.
    worker_seed = seed if world_size == 1 else int(
        np.random.SeedSequence([seed, rank]).generate_state(1)[0]
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        worker_init_fn=worker_init_fn if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(worker_seed),
        persistent_workers=num_workers > 0,
    )
    return iter(loader)


def device_batches(dataset: Dataset, cfg: TrainConfig, seed: int, start_iter: int, device,
                   dist=None) -> Iterator[Batch]:
    """The endless stream of :func:`build_loader` from iteration ``start_iter``, as
    :class:`segda.methods.Batch` es on ``device`` (images channels-last when
    ``run.channels_last``); ``dist``: this rank's share of a data-parallel run, or ``None``."""
    loader = build_loader(
        dataset, batch_size=cfg.data.batch_size, seed=seed, start_iter=start_iter,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
        rank=dist.rank if dist is not None else 0,
        world_size=dist.world_size if dist is not None else 1,
    )
    memory_format = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    for item in loader:
        label = item.get("label")
        yield Batch(
            image=item["image"].to(device, non_blocking=True, memory_format=memory_format),
            label=None if label is None else label.to(device, non_blocking=True),
        )
