"""Data-parallel training: the process group and the collectives the training loop needs.

``torchrun`` launches the ordinary ``train`` command; it sees ``RANK`` / ``WORLD_SIZE`` in the
environment and joins the group (:func:`init_from_env`)::

    torchrun --nproc_per_node 4 -m segda train paper/advent --run-dir runs/advent_x4 \\
        --set data.root=data

Every rank runs the same :func:`segda.train.fit` on its own images; the ranks stay identical.

How the ranks are kept in step
------------------------------
* **Weights.** Every rank builds the models from the same seed; rank 0's parameters and buffers
  are then broadcast once (after a resume too), so all ranks start equal.
* **Gradients.** One training step runs several backward passes through the segmenter (source,
  then target) and through each discriminator (source, then target), and the discriminators are
  frozen (``requires_grad=False``) during the segmenter's target pass. Instead of wrapping the
  modules in ``DistributedDataParallel``, whose reducer fires on the first backward pass and
  expects every parameter it tracks to get exactly one gradient per forward (so here it would
  need ``no_sync`` on all passes but the last plus ``find_unused_parameters`` for the frozen
  passes), the gradients are averaged explicitly, once, after the last backward pass and just
  before the optimizer steps (:meth:`DistContext.sync_step`): one all-reduce of all gradients
  flattened into one buffer. That is correct whatever the order and number of backward passes,
  and costs one collective per step; what it gives up is DDP's overlap of communication with
  the backward pass.
* **Batch norm.** Each rank normalises with its own batch's statistics, as a single-device run
  with the per-rank batch does (the official batch is 1; synchronised batch norm would change
  that). The running statistics are averaged over the ranks at every step. The running
  statistics are an exponential moving average, linear in the batch statistics, so averaging
  every step gives the same values as averaging once at the end, and keeps every rank's state
  (and the checkpoint) identical.
* **Data.** Rank ``r`` of ``W`` with a per-rank batch ``B`` takes, at iteration ``k``, positions
  ``[(kW + r) B, (kW + r + 1) B)`` of the single-process stream of :mod:`segda.data.loaders`
  (:class:`segda.data.loaders.RankSampler`). The ranks therefore draw different images, and
  together they see at iteration ``k`` exactly the batch ``k`` of a single-process run with
  batch ``W * B``, in the same order; a resumed run continues the stream exactly.
* **Effective batch and learning rate.** Each step averages the gradients of ``W`` ranks, i.e.
  the gradient of the mean of the per-rank losses: an effective batch of ``W * B`` source and
  ``W * B`` target images (each rank's cross-entropy is a mean over its own valid pixels, and
  the ranks are weighted equally). The learning rates are used *as configured*: nothing is
  rescaled. With the papers' settings (``B = 1``, ``lr = 2.5e-4``, 120k iterations) a
  ``W``-GPU run makes the same number of steps with ``W`` times as many images per step and a
  less noisy gradient. To keep the number of images seen instead, divide ``optim.max_iters``
  and ``optim.early_stop`` by ``W``; the linear scaling rule (``optim.lr * W``,
  ``optim.lr_disc * W``) is then the usual starting point, but it has not been validated for
  these adversarial losses.
* **Checkpoints and logs.** Rank 0 writes checkpoints, ``history.csv``, ``metrics.json`` and
  the config; every rank reads ``last.pth`` to resume. Logged losses are means over the ranks,
  so a non-finite loss stops every rank at the same iteration. The world size is stored in the
  checkpoint and a resume with another world size is refused (it would draw other images).
  Evaluation is split over the ranks and the confusion matrices are summed
  (:meth:`segda.metrics.ConfusionMatrix.reduce_from_all_processes`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn


@dataclass
class DistContext:
    """This process's place in the group, and the collectives the training loop needs."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.device.type == "cuda":
            tdist.barrier(device_ids=[self.device.index])
        else:
            tdist.barrier()

    def broadcast_modules(self, modules: Iterable[nn.Module]) -> None:
        """Give every rank rank 0's parameters and buffers."""
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        for dtype in sorted({t.dtype for t in tensors}, key=str):
            group = [t for t in tensors if t.dtype == dtype]
            flat = _flatten([t.detach() for t in group])
            tdist.broadcast(flat, src=0)
            _unflatten_into(flat, [t.data for t in group])

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the ranks (one all-reduce per dtype)."""
        for dtype in sorted({t.dtype for t in tensors}, key=str):
            group = [t for t in tensors if t.dtype == dtype]
            flat = _flatten(group)
            tdist.all_reduce(flat)
            flat /= self.world_size
            _unflatten_into(flat, group)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over the ranks of a small tensor (logged losses)."""
        out = values.detach().to(self.device, torch.float64).clone()
        tdist.all_reduce(out)
        return (out / self.world_size).cpu()

    def sync_step(self, state) -> None:
        """Average gradients (segmenter and discriminators) and batch-norm running statistics."""
        modules = [state.seg, *state.discs.values()]
        grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
        self.average_(grads)
        self.average_(running_stats(state.seg))

    def check_in_sync(self, modules: Iterable[nn.Module]) -> None:
        """Raise if the ranks' parameters or buffers differ (a bug, never expected)."""
        sums = torch.stack([t.detach().double().sum() for m in modules
                            for t in (*m.parameters(), *m.buffers())]).to(self.device)
        gathered = [torch.empty_like(sums) for _ in range(self.world_size)]
        tdist.all_gather(gathered, sums)
        for r, other in enumerate(gathered):
            if not torch.equal(other, gathered[0]):
                raise RuntimeError(f"rank {r}'s weights differ from rank 0's: the ranks diverged")


def running_stats(module: nn.Module) -> list[torch.Tensor]:
    """Running mean and variance of the batch-norm layers that update them (training mode)."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            out += [m.running_mean, m.running_var]
    return out


def _flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view(t.shape))  # by logical index, any layout
        offset += n


def launched_by_torchrun() -> bool:
    """True in a process that ``torchrun`` started as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(backend: str | None = None, device: str = "auto") -> DistContext:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``). NCCL on CUDA devices, gloo on CPU."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not tdist.is_initialized():
        tdist.init_process_group(backend or ("nccl" if use_cuda else "gloo"), rank=rank,
                                 world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


def destroy() -> None:
    """Leave the process group (the end of a data-parallel run)."""
    if tdist.is_initialized():
        tdist.destroy_process_group()
