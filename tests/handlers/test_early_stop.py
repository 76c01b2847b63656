"""Early stopping's patience survives ``--resume_from``: the state goes into the checkpoint and comes back."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events

from epsseg_monai.handlers import EarlyStopHandler, ResumeCheckpointLoader, TrainingCheckpoint


def evaluator_with(scores: list[float]) -> Engine:
    """An evaluator whose n-th run reports ``scores[n]`` as ``val_mean_dice``."""
    evaluator = Engine(lambda e, b: None)
    runs = iter(scores)

    @evaluator.on(Events.EPOCH_COMPLETED)  # before the handler, attached later to the same event
    def _score(engine: Engine) -> None:
        engine.state.metrics["val_mean_dice"] = next(runs)

    return evaluator


def stopper(patience: int, trainer: Engine | None = None) -> EarlyStopHandler:
    return EarlyStopHandler(patience=patience, score_function=lambda e: e.state.metrics["val_mean_dice"],
                            trainer=trainer, epoch_level=True)  # fmt: skip


def validate(handler: EarlyStopHandler, evaluator: Engine, times: int) -> None:
    handler.attach(evaluator)
    for _ in range(times):
        evaluator.run([0])


def test_state_round_trip_keeps_counting():
    trainer = Engine(lambda e, b: None)
    first = stopper(3, trainer)
    validate(first, evaluator_with([0.5, 0.4, 0.3]), 3)  # best 0.5, then 2 validations without improvement
    assert first.state_dict() == {"counter": 2, "best_score": 0.5} and not trainer.should_terminate

    resumed_trainer, fresh_trainer = Engine(lambda e, b: None), Engine(lambda e, b: None)
    resumed = stopper(3)
    resumed.load_state_dict(first.state_dict())  # before the trainer is set, as the bundle's resume order may be
    resumed.set_trainer(resumed_trainer)
    validate(resumed, evaluator_with([0.45]), 1)
    assert resumed_trainer.should_terminate, "third validation without improvement over the interrupted run's best"
    fresh = stopper(3, fresh_trainer)
    validate(fresh, evaluator_with([0.45]), 1)
    assert not fresh_trainer.should_terminate, "a fresh handler would have granted a new patience"
    with pytest.raises(KeyError, match="best_score"):
        resumed.load_state_dict({"counter": 1})


def test_checkpoint_carries_it_and_older_checkpoints_still_resume(tmp_path, caplog):
    net = torch.nn.Linear(2, 2)
    trainer = Engine(lambda e, b: None)
    handler = stopper(4, trainer)
    validate(handler, evaluator_with([0.8, 0.7]), 2)
    ckpt = TrainingCheckpoint(tmp_path, {"model": net, "trainer": trainer, "early_stop": handler})
    ckpt.attach(trainer)
    trainer.run([0], max_epochs=1)
    (path,) = list(tmp_path.glob("checkpoint*.pt"))
    assert torch.load(path, weights_only=True)["early_stop"] == {"counter": 1, "best_score": 0.8}

    trainer2 = Engine(lambda e, b: None)
    handler2 = stopper(4)
    ResumeCheckpointLoader(str(path), {"model": torch.nn.Linear(2, 2), "trainer": trainer2,
                                       "early_stop": handler2})(trainer2)  # fmt: skip
    handler2.set_trainer(trainer2)
    assert handler2.state_dict() == {"counter": 1, "best_score": 0.8}

    older = torch.load(path, weights_only=True)
    del older["early_stop"]  # a checkpoint from before the state was saved
    torch.save(older, tmp_path / "older.pt")
    (tmp_path / "older.pt").rename(path.with_name("checkpoint_epoch=9.pt"))
    handler3 = stopper(4, Engine(lambda e, b: None))
    with caplog.at_level(logging.WARNING):
        ResumeCheckpointLoader(str(path.with_name("checkpoint_epoch=9.pt")),
                               {"model": torch.nn.Linear(2, 2), "trainer": Engine(lambda e, b: None),
                                "early_stop": handler3})(Engine(lambda e, b: None))  # fmt: skip
    assert "early_stop" in caplog.text and handler3.state_dict() == {"counter": 0, "best_score": None}
    missing = {k: v for k, v in older.items() if k != "model"}
    torch.save(missing, tmp_path / "checkpoint_epoch=10.pt")
    with pytest.raises(ValueError, match="model"):
        ResumeCheckpointLoader(str(tmp_path / "checkpoint_epoch=10.pt"),
                               {"model": torch.nn.Linear(2, 2), "trainer": trainer2})(trainer2)  # fmt: skip


def test_a_resume_reads_the_checkpoint_twice(tmp_path, monkeypatch):
    """Once for the start-up check of its phase (``resume_phase`` in train.json), once to restore the states."""
    from epsseg_monai.handlers.checkpoint import checkpoint_phase

    trainer = Engine(lambda e, b: None)
    ckpt = TrainingCheckpoint(tmp_path, {"model": torch.nn.Linear(2, 2), "trainer": trainer})
    ckpt.attach(trainer)
    trainer.run([0], max_epochs=1)
    (path,) = list(tmp_path.glob("checkpoint*.pt"))
    reads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or load(*a, **k))
    assert checkpoint_phase(path) == "train"
    trainer2 = Engine(lambda e, b: None)
    ResumeCheckpointLoader(str(path), {"model": torch.nn.Linear(2, 2), "trainer": trainer2})(trainer2)
    assert len(reads) == 2 and trainer2.state.epoch == 1
