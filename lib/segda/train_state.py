"""What changes during training: the models, their optimizers, the iteration and the logs.

The step (:mod:`segda.step`) updates it, the fit loop (:mod:`segda.train`) drives it, and the
checkpoint and the run folder (:mod:`segda.checkpointing`, :mod:`segda.runs`) save it; it
imports nothing of the package, so that saving a state does not depend on how a step runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class TrainState:
    """Everything that changes during training."""

    seg: nn.Module
    discs: dict[str, nn.Module]
    opt_seg: torch.optim.Optimizer
    opt_discs: dict[str, torch.optim.Optimizer]
    iteration: int = 0  # the next iteration to run
    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0  # training wall time summed over every fit() call (resumes included)
    # Data-parallel training (segda.distributed.DistContext): averages gradients and batch-norm
    # statistics over the ranks just before the optimizer steps. None on one process.
    dist: Any = None
    stages: Any = field(default=None, repr=False)  # the step's (possibly compiled) stages
