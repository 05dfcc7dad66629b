"""What the fit loop records of each step and the loss half of the NaN stop: the loss history,
TensorBoard, the progress bar, and the error that stops a run whose losses are no longer finite.

:class:`TrainLog` keeps each step's loss terms as tensors until the loop flushes them (at the
logging cadence, before an evaluation or a checkpoint, at the end): converting a tensor to a
number waits for the device, so the loop does it every ``run.log_every`` steps, not every step.
A flush averages the terms over the ranks of a data-parallel run, so every rank sees the same
values and a non-finite one stops all ranks together (:class:`NonFiniteLossError`). The state
half, a non-finite tensor refused before it is written, is :func:`segda.checkpointing.save`'s.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from segda import runs
from segda.checkpointing import NonFiniteLossError
from segda.config import TrainConfig
from segda.train_state import TrainState

PROGRESS_BARS = ("text", "notebook", "none")
# What the bar's postfix sums each step's terms into (by the prefix of their names); the
# remaining terms but the step diagnostics (``diag_``) are the target term ("tgt"). AdvEnt logs
# eight loss values, and a postfix of all of them squeezes a notebook's bar to nothing.
POSTFIX_GROUPS = (("seg", ("seg_",)), ("tgt", ()), ("D", ("disc_",)))


# A plain progress line every this many iterations (more for long runs: about 100 lines a run).
PLAIN_EVERY = 50


class PlainProgress:
    """Progress as plain lines, where a bar's carriage returns would pile up (a SLURM or CI log,
    output redirected to a file, a notebook executed by papermill): one line every ``every``
    iterations, at the first flush of the losses after it, and one at the end, each with
    the iteration, the total, the seconds since the start and the losses of the bar's postfix,
    labelled ``name``. The same calls as a tqdm bar (``update``, ``set_postfix``, ``close``)."""

    def __init__(self, name: str, start: int, end: int, stream, every: int | None = None,
                 total: int | None = None) -> None:
        # ``total``: the run's length, when this call stops earlier (``fit``'s ``stop_at``,
        # a run trained in chunks), so that a line reads "50/200", not "50/50"
        self.name, self.n, self.start, self.stream = name, start, start, stream
        self.total = end if total is None else total
        self.every = every or max(PLAIN_EVERY, (end - start) // 100)
        self._next = (start // self.every + 1) * self.every
        self._postfix: dict[str, str] = {}
        self._printed: int | None = None
        self._t0 = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, postfix: Mapping[str, str]) -> None:
        self._postfix = dict(postfix)
        if self.n >= self._next:
            self._line()
            self._next = (self.n // self.every + 1) * self.every

    def close(self) -> None:
        if self._printed != self.n and self.n > self.start:  # nothing trained: nothing to say
            self._line()

    def _line(self) -> None:
        losses = "".join(f", {k} {v}" for k, v in self._postfix.items())
        print(f"{self.name}: iteration {self.n}/{self.total}, "
              f"{time.perf_counter() - self._t0:.0f} s{losses}", file=self.stream, flush=True)
        self._printed = self.n


def _on_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _in_kernel() -> bool:
    """Whether this process is a Jupyter kernel, where tqdm.auto draws a widget (no carriage
    returns); the test tqdm.autonotebook makes."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def progress_bar(cfg: TrainConfig, start: int, end: int, style: str | None = None,
                 name: str | None = None):
    """A tqdm bar, plain lines (:class:`PlainProgress`), or ``None``. ``style`` (see
    :func:`segda.train.fit`) overrides ``run.progress``, whose bar is tqdm's automatic choice
    (a widget in a notebook kernel, text elsewhere). A text bar is drawn only on a terminal;
    where the output is not one (a log file, papermill's kernel) the progress is plain lines.
    Either is labelled ``name``, the run's folder (default: the method's name, which the
    oracle shares with source-only)."""
    if style is not None and style not in PROGRESS_BARS:
        raise ValueError(f"progress_bar must be one of {PROGRESS_BARS} or None, got {style!r}")
    if style == "none" or (style is None and not cfg.run.progress):
        return None
    stream = sys.stderr  # where tqdm draws
    if not _on_terminal(stream) and (style == "text" or (style is None and not _in_kernel())):
        return PlainProgress(name or cfg.method.name, start, end, stream,
                             total=max(end, cfg.optim.early_stop))
    # A text bar is also what an executed notebook stores (one output per redraw): redraw it
    # every few seconds, not ten times a second.
    interval = {"text": 5.0}.get(style, 0.1)
    if style == "text":
        from tqdm.std import tqdm
    elif style == "notebook":
        from tqdm.notebook import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(total=end, initial=start, desc=name or cfg.method.name, leave=style is not None,
                mininterval=interval)


def bar_postfix(values: Mapping[str, float]) -> dict[str, str]:
    """The progress bar's postfix of one step's logged values: the segmentation loss (sum of
    ``seg_*``), the target term (sum of the entropy or adversarial terms) and the
    discriminators' loss (sum of ``disc_*``), each with 3 significant digits; a group the
    method does not log is left out, and so are the step diagnostics (``diag_*``).

    >>> bar_postfix({"seg_main": 0.41, "seg_aux": 0.05, "adv_main": 0.0012, "disc_main_src": 0.7})
    {'seg': '0.46', 'tgt': '0.0012', 'D': '0.7'}
    """
    sums: dict[str, float] = {}
    for key, value in values.items():
        if key == "iteration" or key.startswith("diag_"):
            continue
        group = next((g for g, prefixes in POSTFIX_GROUPS if key.startswith(prefixes)), "tgt")
        sums[group] = sums.get(group, 0.0) + float(value)
    return {g: f"{sums[g]:.3g}" for g, _ in POSTFIX_GROUPS if g in sums}


def _check_finite(values: dict[str, float], it: int, kept: str) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss at iteration {it}: {bad}; the run stopped and {kept} "
            "(lower the learning rate or lambdas, or check the labels)"
        )


class TrainLog:
    """The loss log of one fit: ``record`` each step's terms, ``flush`` them into
    ``state.history`` (and TensorBoard, and the bar's text).

    Args:
        state: the training state whose ``history`` grows and whose ``dist`` (a data-parallel
            run's context, or ``None``) averages the terms.
        cfg: the run's config (``run.tensorboard``, ``run.progress``).
        run_dir: the run folder (TensorBoard writes into it), or ``None``.
        end: the iteration the loop stops after (the bar's total).
        kept: what the run leaves if it stops now (named in the NaN error).
        style: the progress bar (:func:`progress_bar`).

    Only rank 0 writes TensorBoard and shows a bar.
    """

    def __init__(self, state: TrainState, cfg: TrainConfig, run_dir: Path | None, end: int,
                 kept: Callable[[], str], style: str | None = None) -> None:
        main = state.dist is None or state.dist.is_main
        self.state, self._kept = state, kept
        self.writer = (runs.tensorboard_writer(run_dir)
                       if cfg.run.tensorboard and run_dir and main else None)
        name = run_dir.name if run_dir is not None else None
        self._bar = progress_bar(cfg, state.iteration, end, style, name) if main else None
        self._pending: list[tuple[int, dict[str, torch.Tensor]]] = []

    def record(self, iteration: int, terms: dict[str, torch.Tensor]) -> None:
        """Keep the loss terms of the step that began at ``iteration`` (tensors, not yet read)."""
        self._pending.append((iteration, terms))
        if self._bar is not None:
            self._bar.update(1)

    def flush(self) -> None:
        """Read the recorded terms (their mean over the ranks), stop on a non-finite one with
        :class:`NonFiniteLossError`, and append them to the history."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        dist = self.state.dist
        if dist is not None:
            # The mean over the ranks: every rank then sees the same (non-)finite values.
            flat = dist.mean(torch.stack([v.float() for _, t in pending for v in t.values()]))
            it_flat = iter(flat.tolist())
            pending = [(it, {k: next(it_flat) for k in terms}) for it, terms in pending]
        for it, terms in pending:
            values = {k: float(v) for k, v in terms.items()}
            _check_finite(values, it, self._kept())
            self.state.history.append({"iteration": it, **values})
            if self.writer:
                for k, v in values.items():
                    self.writer.add_scalar(f"loss/{k}", v, it)
        if self._bar is not None:
            self._bar.set_postfix(bar_postfix(self.state.history[-1]))

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self.close_bar()
        if self.writer:
            self.writer.close()
