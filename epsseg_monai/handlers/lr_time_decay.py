"""Learning-rate decay over a wall-clock training budget.

A run stopped by a time limit (``--time_limit``, the way the CPU preset trains) never gets to the small
learning rates a schedule over a known number of steps would end with: ``ReduceLROnPlateau`` rarely fires
within 30 minutes, and the last weights are taken at full learning rate. Decaying the learning rate
linearly to a small fraction as the budget runs out is the schedule found best for budgeted training
(Li, Yumer & Ramanan, "Budgeted Training: Rethinking Deep Neural Network Training Under Resource
Constraints", ICLR 2020). The decay multiplies whatever learning rate the optimiser holds, so it composes
with ``ReduceLROnPlateau``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from ignite.engine import Engine, Events

__all__ = ["TimeBudgetLRDecay"]


class TimeBudgetLRDecay:
    """Scale every parameter group's learning rate by ``max(final_fraction, 1 - elapsed / time_limit)``.

    The factor is applied before every iteration; ``elapsed`` counts from the first iteration of this run
    (resumed runs start a new budget, as ``ignite.handlers.TimeLimit`` does). Changes other schedulers make
    to the learning rate between iterations (e.g. ``ReduceLROnPlateau`` halving it) are kept: the handler
    divides out the factor it applied last before applying the new one.

    Args:
        optimizer: the optimiser of the trainer.
        time_limit: the training budget in seconds (the ``TimeLimit`` of the same trainer).
        final_fraction: the smallest factor, reached when the budget is spent (must be in ``(0, 1]``).
        clock: a function returning seconds (tests pass a fake clock).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        time_limit: float,
        final_fraction: float = 0.01,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not time_limit or time_limit <= 0:
            raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}.")
        if not 0 < final_fraction <= 1:
            raise ValueError(f"final_fraction must be in (0, 1], got {final_fraction!r}.")
        self.optimizer, self.time_limit, self.final_fraction, self.clock = (
            optimizer,
            float(time_limit),
            final_fraction,
            clock,
        )
        self.start: float | None = None
        self.factor = 1.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def current_factor(self) -> float:
        """The factor for the time elapsed so far."""
        if self.start is None:
            return 1.0
        return max(self.final_fraction, 1.0 - (self.clock() - self.start) / self.time_limit)

    def __call__(self, engine: Engine) -> None:
        if self.start is None:
            self.start = self.clock()
        new = self.current_factor()
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] / self.factor * new
        self.factor = new
