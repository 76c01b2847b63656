"""Tests of ``epsseg_monai.handlers.checkpoint`` and ``time_budget``: nothing is lost on interruption, and a
resumed run ends where the uninterrupted run would."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from epsseg_monai.handlers import BestModelSaver, LastModelSaver, TimeBudget, TrainingCheckpoint, atomic_save
from epsseg_monai.handlers import checkpoint as checkpoint_module

EPOCH_LENGTH = 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_training(tmp_path: Path, clock: FakeClock | None = None, time_limit: float | None = None):
    """A deterministic trainer (SGD on a fixed regression) with its checkpoint and time budget."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(EPOCH_LENGTH, 8, 3), torch.randn(EPOCH_LENGTH, 8, 1)

    def step(engine: Engine, batch: int) -> float:
        if clock is not None:
            clock.now += 1.0
        i = (engine.state.iteration - 1) % EPOCH_LENGTH
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x[i]), y[i])
        loss.backward()
        opt.step()
        return loss.item()

    trainer = Engine(step)
    decay = time_limit is not None
    budget = TimeBudget(time_limit, opt, lr_decay=decay, final_fraction=0.01, clock=clock or FakeClock())
    budget.attach(trainer)
    ckpt = TrainingCheckpoint(tmp_path, {"model": net, "optimizer": opt, "trainer": trainer, "time_budget": budget})
    ckpt.attach(trainer)
    return net, opt, trainer, budget, ckpt


def resume(trainer: Engine, ckpt: TrainingCheckpoint, path: Path) -> None:
    state = torch.load(path, weights_only=False)

    @trainer.on(Events.STARTED)
    def load(engine: Engine) -> None:
        max_epochs = engine.state.max_epochs
        for key, obj in ckpt.objects.items():
            obj.load_state_dict(state[key])
        engine.state.max_epochs = max_epochs


def test_atomic_save_keeps_the_old_file_when_a_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    atomic_save({"w": torch.ones(2)}, path)

    def dying_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"w": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_one_checkpoint_kept_and_last_weights_written(tmp_path):
    net, _, trainer, _, _ = make_training(tmp_path)
    trainer.run(range(EPOCH_LENGTH), max_epochs=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=3.pt", "model_last.pt"]
    state = torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=False)
    assert set(state) == {"model", "optimizer", "trainer", "time_budget", "phase"} and state["phase"] == "train"
    assert state["trainer"]["iteration"] == 3 * EPOCH_LENGTH
    last = torch.load(tmp_path / "model_last.pt", weights_only=False)
    torch.testing.assert_close(last["model"]["weight"], net.weight)


def test_killed_during_a_checkpoint_write_then_resumed_matches_uninterrupted(tmp_path, monkeypatch):
    """Fault injection: the process dies while writing epoch 3's checkpoint. Epoch 2's checkpoint is intact, no
    truncated file carries a checkpoint's name, and the run resumed from it ends with the uninterrupted weights."""
    reference, _, reference_trainer, _, _ = make_training(tmp_path / "ref")
    reference_trainer.run(range(EPOCH_LENGTH), max_epochs=5)

    net, _, trainer, _, ckpt = make_training(tmp_path / "run")
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        if trainer.state.epoch == 3:
            Path(f).write_bytes(b"half")
            raise KeyboardInterrupt  # the kill arrives mid-write
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(range(EPOCH_LENGTH), max_epochs=5)
    monkeypatch.undo()
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["checkpoint_epoch=2.pt"], files
    assert torch.load(tmp_path / "run" / "checkpoint_epoch=2.pt", weights_only=False)["trainer"]["iteration"] == 8

    net2, _, trainer2, _, ckpt2 = make_training(tmp_path / "run")
    resume(trainer2, ckpt2, tmp_path / "run" / "checkpoint_epoch=2.pt")
    trainer2.run(range(EPOCH_LENGTH), max_epochs=5)
    assert trainer2.state.iteration == 5 * EPOCH_LENGTH
    torch.testing.assert_close(net2.weight, reference.weight, rtol=0, atol=0)
    torch.testing.assert_close(net2.bias, reference.bias, rtol=0, atol=0)


def test_run_writes_a_last_checkpoint_on_an_exception(tmp_path):
    net, _, trainer, _, ckpt = make_training(tmp_path)

    @trainer.on(Events.ITERATION_COMPLETED(once=6))
    def interrupt(engine: Engine) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.run(_Runner(trainer, 5))
    state = torch.load(tmp_path / "checkpoint_epoch=2.pt", weights_only=False)
    assert state["trainer"]["iteration"] == 6, "the interrupted iteration's state is the last checkpoint"
    assert not (tmp_path / "checkpoint_epoch=1.pt").exists()
    last = torch.load(tmp_path / "model_last.pt", weights_only=False)
    torch.testing.assert_close(last["model"]["weight"], net.weight)


def test_sigterm_stops_gracefully_with_a_checkpoint(tmp_path):
    _, _, trainer, _, ckpt = make_training(tmp_path)

    @trainer.on(Events.ITERATION_COMPLETED(once=7))
    def kill(engine: Engine) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    ckpt.run(_Runner(trainer, 5))  # returns normally: SIGTERM terminates the run after the iteration
    assert signal.getsignal(signal.SIGTERM) == previous
    assert trainer.state.iteration == 7
    assert torch.load(tmp_path / "checkpoint_epoch=2.pt", weights_only=False)["trainer"]["iteration"] == 7
    assert (tmp_path / "model_last.pt").is_file()


class _Runner:
    """``engine.run(data, max_epochs)`` behind the no-argument ``run()`` that :meth:`TrainingCheckpoint.run` calls
    (a MONAI trainer holds its data loader and epoch count)."""

    def __init__(self, engine: Engine, max_epochs: int) -> None:
        self.engine, self.max_epochs = engine, max_epochs

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def run(self):
        return self.engine.run(range(EPOCH_LENGTH), max_epochs=self.max_epochs)


def test_best_model_saver_keeps_the_best_over_a_resume(tmp_path, caplog):
    net = torch.nn.Linear(2, 1)
    saver = BestModelSaver(tmp_path / "model.pt", net, "dice")
    evaluator = Engine(lambda e, b: None)
    saver.attach(evaluator)
    scores = iter([0.5, float("nan"), 0.4])

    @evaluator.on(Events.EPOCH_COMPLETED)
    def score(engine: Engine) -> None:
        engine.state.metrics["dice"] = next(scores)

    evaluator.run([0])
    best_weights = {k: v.clone() for k, v in net.state_dict().items()}
    for _ in range(2):  # nan and a worse score: model.pt keeps the best
        with torch.no_grad():
            net.weight.add_(1.0)
        with caplog.at_level("WARNING"):
            evaluator.run([0])
    assert sum("Validation dice is nan" in r.getMessage() for r in caplog.records) == 1, "nan must be warned about"
    assert torch.equal(torch.load(tmp_path / "model.pt")["weight"], best_weights["weight"])
    resumed = BestModelSaver(tmp_path / "model.pt", net, "dice")
    resumed.load_state_dict(saver.state_dict())
    resumed.attach(evaluator2 := Engine(lambda e, b: None))

    @evaluator2.on(Events.EPOCH_COMPLETED)
    def worse(engine: Engine) -> None:
        engine.state.metrics["dice"] = 0.45

    evaluator2.run([0])  # the first validation after a resume is worse: it does not replace model.pt
    assert torch.equal(torch.load(tmp_path / "model.pt")["weight"], best_weights["weight"])
    assert resumed.best == 0.5 and not math.isinf(resumed.best)


def test_last_model_saver_writes_the_last_weights_each_epoch_and_at_a_stop(tmp_path):
    """Without validation model.pt is the last weights: after every epoch, and where a time budget stops the
    run within an epoch (ignite fires no EPOCH_COMPLETED then)."""
    clock = FakeClock()
    net, _, trainer, _, _ = make_training(tmp_path / "ckpt", clock=clock, time_limit=6.0)
    saver = LastModelSaver(tmp_path / "model.pt", net)
    saver.attach(trainer)
    saved: list[int] = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def after_epoch(engine: Engine) -> None:
        saved.append(engine.state.iteration)
        state = torch.load(tmp_path / "model.pt", weights_only=True)
        assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())

    trainer.run(range(EPOCH_LENGTH), max_epochs=5)
    assert saved == [4]  # one full epoch, then the budget (6 iterations) stops the second one
    assert trainer.state.iteration == 6
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items()), "model.pt is not the last weights"


def test_time_budget_counts_resumed_runs_and_decays_once(tmp_path):
    """A 10 s budget, interrupted at 4 s: the resumed run stops at 10 s in all (not 14), and its learning rate
    continues the decay from where it was (not decayed twice)."""
    clock = FakeClock()
    _, opt, trainer, budget, ckpt = make_training(tmp_path, clock, time_limit=10)

    @trainer.on(Events.ITERATION_COMPLETED(once=4))
    def interrupt(engine: Engine) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.run(_Runner(trainer, 100))
    saved = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=False)
    assert saved["time_budget"]["elapsed"] == pytest.approx(4.0)

    clock2 = FakeClock()
    clock2.now = 1000.0  # a new process: its clock has nothing to do with the first one's
    _, opt2, trainer2, budget2, ckpt2 = make_training(tmp_path, clock2, time_limit=10)
    lrs = []
    trainer2.add_event_handler(Events.ITERATION_COMPLETED, lambda e: lrs.append(opt2.param_groups[0]["lr"]))
    resume(trainer2, ckpt2, tmp_path / "checkpoint_epoch=1.pt")
    trainer2.run(range(EPOCH_LENGTH), max_epochs=100)
    assert budget2.elapsed() == pytest.approx(10.0)
    assert trainer2.state.iteration == 10, "the resumed run spends only the 6 s left"
    # iteration k starts at k - 1 seconds of training: lr = 0.1 * (1 - (k - 1) / 10)
    assert lrs == pytest.approx([0.1 * (1 - (k - 1) / 10) for k in range(5, 11)])


def test_time_budget_without_limit_only_counts():
    clock = FakeClock()
    budget = TimeBudget(None, clock=clock)
    engine = Engine(lambda e, b: clock.__setattr__("now", clock.now + 1))
    budget.attach(engine)
    engine.run(range(3), max_epochs=2)
    assert engine.state.iteration == 6 and budget.elapsed() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="time_limit"):
        TimeBudget(-1)
    with pytest.raises(ValueError, match="optimizer"):
        TimeBudget(5, lr_decay=True)


def test_checkpoints_name_their_phase_and_a_resume_keeps_the_configured_epoch_length(tmp_path):
    from epsseg_monai.handlers import ResumeCheckpointLoader
    from epsseg_monai.handlers.checkpoint import check_resume_phase, checkpoint_phase

    net, opt, trainer, budget, ckpt = make_training(tmp_path)
    trainer.run(range(EPOCH_LENGTH), max_epochs=2)
    path = tmp_path / "checkpoint_epoch=2.pt"
    assert checkpoint_phase(path) == "train" and checkpoint_phase(None) is None
    assert check_resume_phase("train", ["train"], str(path)) == "train"
    with pytest.raises(ValueError, match="semi_supervised.json"):
        check_resume_phase("semi_supervised", ["train"], str(path))
    atomic_save(net.state_dict(), tmp_path / "model.pt")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        checkpoint_phase(tmp_path / "model.pt")
    assert checkpoint_phase(path, torch.nn.Linear(3, 1)) == "train"
    with pytest.raises(ValueError, match=r"another network size: 2 tensors differ, e.g. weight \(1, 3\) in the "):
        checkpoint_phase(path, torch.nn.Linear(4, 2))

    net2, opt2, trainer2, budget2, ckpt2 = make_training(tmp_path / "resumed")
    objects = dict(ckpt2.objects)
    with pytest.raises(ValueError, match="'train' phase, not of 'self_training'"):
        ResumeCheckpointLoader(str(path), objects, phase="self_training")(trainer2)
    ResumeCheckpointLoader(str(path), objects).attach(trainer2)
    trainer2.run(range(2 * EPOCH_LENGTH), max_epochs=3, epoch_length=2 * EPOCH_LENGTH)
    assert trainer2.state.epoch == 3 and trainer2.state.epoch_length == 2 * EPOCH_LENGTH
    assert trainer2.state.iteration == 3 * 2 * EPOCH_LENGTH  # epoch 3 ran with the new length


def test_a_new_training_refuses_an_earlier_one_unless_asked(tmp_path):
    from epsseg_monai.handlers.checkpoint import check_training_outputs

    check_training_outputs(tmp_path)  # empty: fine
    (tmp_path / "intensity_stats.json").write_text("{}")
    check_training_outputs(tmp_path)  # statistics alone are no trained model
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--overwrite true"):
        check_training_outputs(tmp_path)
    check_training_outputs(tmp_path, overwrite=True)
    check_training_outputs(tmp_path, resume_from=str(tmp_path / "model_last.pt"))
