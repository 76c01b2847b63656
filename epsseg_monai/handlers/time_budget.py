"""A wall-clock training budget that survives interruption: it stops the trainer when spent and, optionally,
decays the learning rate over it (:class:`~epsseg_monai.handlers.TimeBudgetLRDecay`).

``ignite.handlers.TimeLimit`` and a decay that counts from the start of the current run both restart when a run is
resumed from a checkpoint: the resumed run would get the whole budget again and apply the decay a second time,
from the already decayed learning rate. :class:`TimeBudget` keeps the time already spent in its ``state_dict``,
so a resumed run spends only what is left and continues the decay where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..utils import all_reduce_max, is_distributed
from .lr_time_decay import TimeBudgetLRDecay

__all__ = ["TimeBudget"]

logger = logging.getLogger(__name__)


class TimeBudget:
    """Stop training after ``time_limit`` seconds in all (resumed runs included); optionally decay the learning rate.

    Args:
        time_limit: the budget in seconds; ``None`` or ``0``: no limit (the handler only counts the time).
        optimizer: the trainer's optimiser, needed with ``lr_decay``.
        lr_decay: scale the learning rate by ``max(final_fraction, 1 - elapsed / time_limit)`` before every
            iteration (see :class:`~epsseg_monai.handlers.TimeBudgetLRDecay`).
        final_fraction: the smallest decay factor.
        clock: a function returning seconds (tests pass a fake clock).

    Under ``torchrun`` (a process group of several ranks) the elapsed time is the largest over the ranks, agreed
    at the start of every iteration, so all ranks decay the learning rate alike and stop at the same iteration
    (a rank that stopped alone would leave the others waiting in the gradient all-reduce).
    """

    def __init__(
        self,
        time_limit: float | None,
        optimizer: torch.optim.Optimizer | None = None,
        lr_decay: bool = False,
        final_fraction: float = 0.01,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if time_limit is not None and time_limit < 0:
            raise ValueError(f"time_limit must be a number of seconds >= 0 or None, got {time_limit!r}.")
        self.time_limit = float(time_limit) if time_limit else None
        self.clock = clock
        self.elapsed_before = 0.0
        self.run_start: float | None = None
        self.decay: TimeBudgetLRDecay | None = None
        self._agreed: float | None = None  # the ranks' common elapsed time, under torchrun
        if lr_decay and self.time_limit:
            if optimizer is None:
                raise ValueError("lr_decay needs the optimizer.")
            self.decay = TimeBudgetLRDecay(optimizer, self.time_limit, final_fraction, clock=self.elapsed)
            self.decay.start = 0.0  # the decay reads the total elapsed time, resumed runs included

    def _local_elapsed(self) -> float:
        running = 0.0 if self.run_start is None else self.clock() - self.run_start
        return self.elapsed_before + running

    def elapsed(self) -> float:
        """Seconds of training so far, over this run and the runs it resumes (under ``torchrun``: as agreed by
        the ranks at the start of the current iteration)."""
        return self._local_elapsed() if self._agreed is None else self._agreed

    def agree(self, engine: Engine) -> None:
        """Under ``torchrun``: take the largest elapsed time of all ranks (one scalar all-reduce)."""
        self._agreed = all_reduce_max(self._local_elapsed()) if is_distributed() else None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.agree)
        if self.decay is not None:
            engine.add_event_handler(Events.ITERATION_STARTED, self.decay)
        if self.time_limit:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.check)

    def started(self, engine: Engine) -> None:
        self.run_start = self.clock()
        self._agreed = None

    def check(self, engine: Engine) -> None:
        if self.time_limit and self.elapsed() >= self.time_limit:
            logger.info(f"Reached the time limit: {self.time_limit:.0f} sec (resumed runs included). Stop training")
            engine.terminate()

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed(), "lr_factor": 1.0 if self.decay is None else self.decay.factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.elapsed_before = float(state["elapsed"])
        self._agreed = None
        if self.run_start is not None:
            self.run_start = self.clock()
        if self.decay is not None:
            self.decay.factor = float(state.get("lr_factor", 1.0))
