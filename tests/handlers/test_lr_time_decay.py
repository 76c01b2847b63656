"""Tests of ``epsseg_monai.handlers.lr_time_decay``: learning-rate decay over a wall-clock budget."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from epsseg_monai.handlers import TimeBudgetLRDecay


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_linear_decay_to_the_floor():
    clock, opt = FakeClock(), _optimizer(0.5)
    decay = TimeBudgetLRDecay(opt, time_limit=10, final_fraction=0.1, clock=clock)
    lrs = []
    for t in (0, 2.5, 5, 9, 20):
        clock.now = 100.0 + t
        decay(None)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.5, 0.375, 0.25, 0.05, 0.05])


def test_other_schedulers_changes_are_kept():
    """A halving by ReduceLROnPlateau between iterations stays halved under the decay."""
    clock, opt = FakeClock(), _optimizer(1.0)
    decay = TimeBudgetLRDecay(opt, time_limit=10, clock=clock)
    decay(None)
    clock.now += 5
    decay(None)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    opt.param_groups[0]["lr"] *= 0.5  # what a plateau scheduler does
    clock.now += 2.5
    decay(None)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.25)


def test_attached_to_an_engine_it_runs_before_each_iteration():
    clock, opt = FakeClock(), _optimizer(1.0)
    seen = []

    def step(engine, batch):
        seen.append(opt.param_groups[0]["lr"])
        clock.now += 1.0

    engine = Engine(step)
    TimeBudgetLRDecay(opt, time_limit=4, final_fraction=0.01, clock=clock).attach(engine)
    engine.run(range(6), max_epochs=1)
    assert seen == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.01, 0.01])


@pytest.mark.parametrize("kwargs, match", [({"time_limit": 0}, "time_limit"), ({"time_limit": None}, "time_limit"),
                                           ({"time_limit": 5, "final_fraction": 0}, "final_fraction")])  # fmt: skip
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimeBudgetLRDecay(_optimizer(), **kwargs)
