"""Tests of ``SemiSupervisedScheduleHandler``: threshold per epoch, radius growth after validation plateaus."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator
from monai.handlers import ValidationHandler

from epsseg_monai.handlers import SemiSupervisedScheduleHandler
from epsseg_monai.losses import PseudoLabeller, SemiSupervisedEpsSegLoss
from epsseg_monai.transforms import RandNeighbourPatchd


class ScriptedScore(Metric):
    """A key metric whose value at each validation run follows a script."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = iter(scores)
        super().__init__()

    def reset(self) -> None:
        pass

    def update(self, output) -> None:
        pass

    def compute(self) -> float:
        return next(self.scores)


def scripted_validator(scores: list[float]) -> SupervisedEvaluator:
    """A ``monai.engines.SupervisedEvaluator`` (with its best-metric bookkeeping) scoring ``scores`` in turn."""
    return SupervisedEvaluator(
        device="cpu",
        val_data_loader=[torch.zeros(1, 1)],
        network=torch.nn.Identity(),
        key_val_metric={"score": ScriptedScore(scores)},
    )


def run_schedule(scores, epochs=None, **kwargs):
    labeller = PseudoLabeller(threshold=0.5)
    transform = RandNeighbourPatchd(["image"], "label", 8, radius=5)
    validator = scripted_validator(scores)
    trainer = Engine(lambda engine, batch: None)
    ValidationHandler(interval=1, validator=validator, epoch_level=True).attach(trainer)
    handler = SemiSupervisedScheduleHandler(labeller, transform, validator, **kwargs)
    handler.attach(trainer)
    seen = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: seen.append((e.state.metrics["pseudo_threshold"], e.state.metrics["neighbour_radius"])),
    )
    trainer.run([0, 1], max_epochs=epochs or len(scores))
    return labeller, transform, seen, handler


def test_threshold_rises_each_epoch_up_to_the_maximum():
    labeller, _, seen, _ = run_schedule([1.0] * 4, threshold_step=0.2, max_threshold=0.95)
    assert [t for t, _ in seen] == pytest.approx([0.5, 0.7, 0.9, 0.95])  # the values used in each epoch
    assert labeller.threshold == pytest.approx(0.95)


def test_default_schedule_reaches_0_99():
    labeller, _, seen, _ = run_schedule([1.0] * 100)
    assert seen[1][0] == pytest.approx(0.505)
    assert labeller.threshold == pytest.approx(0.99)


def test_radius_grows_only_after_epochs_without_improvement():
    #               improve, same, better, worse, worse, worse, better
    scores = [0.1, 0.1, 0.3, 0.2, 0.2, 0.25, 0.4]
    _, transform, seen, handler = run_schedule(scores)
    # radius used in each epoch: grows by 1 after each validation that did not beat the best so far
    assert [r for _, r in seen] == [5, 5, 6, 6, 7, 8, 9]
    assert transform.radius == 9
    assert handler.epochs_without_improvement == 0


def test_radius_patience_and_maximum():
    scores = [0.5] + [0.1] * 6
    _, transform, seen, _ = run_schedule(scores, radius_patience=2, max_radius=7)
    assert [r for _, r in seen] == [5, 5, 5, 6, 6, 7, 7]
    assert transform.radius == 7


def test_with_the_loss_and_a_monai_evaluator(caplog):
    """The loss's ``threshold`` is the labeller's; a real evaluator's best-metric bookkeeping drives the radius."""
    loss = SemiSupervisedEpsSegLoss(pseudo_threshold=0.6)
    transform = SimpleNamespace(radius=3)
    trainer = Engine(lambda engine, batch: None)
    handler = SemiSupervisedScheduleHandler(loss, transform, validator=None, threshold_step=0.1)
    handler.attach(trainer)
    with caplog.at_level(logging.INFO):
        trainer.run([0], max_epochs=2)
    assert loss.pseudo_labeller.threshold == pytest.approx(0.8)
    assert transform.radius == 3, "no validator: the radius stays"
    assert "pseudo-label threshold 0.700 -> 0.800" in caplog.text

    evaluator = scripted_validator([])
    handler = SemiSupervisedScheduleHandler(loss, transform, validator=evaluator)
    evaluator.state.best_metric_epoch, evaluator.state.epoch = 1, 2  # the best was one epoch ago
    handler.validation_completed(evaluator)
    assert transform.radius == 4
    evaluator.state.best_metric_epoch = 2
    handler.validation_completed(evaluator)
    assert transform.radius == 4


def test_state_dict_round_trip_and_bad_arguments():
    labeller, transform, _, handler = run_schedule([0.5, 0.1])
    state = handler.state_dict()
    assert state == {"threshold": pytest.approx(0.51), "epochs_without_improvement": 0.0, "radius": 6.0}
    labeller.threshold, transform.radius = 0.9, 2
    handler.load_state_dict(state)
    assert labeller.threshold == pytest.approx(0.51) and transform.radius == 6
    with pytest.raises(TypeError, match="threshold"):
        SemiSupervisedScheduleHandler(object())
    with pytest.raises(TypeError, match="radius"):
        SemiSupervisedScheduleHandler(labeller, object())
    with pytest.raises(ValueError, match="radius_patience"):
        SemiSupervisedScheduleHandler(labeller, radius_patience=0)
