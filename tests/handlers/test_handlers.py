"""Tests of ``epsseg_monai.handlers``: loss-term logging, sparse Dice metric handler, gradient clipping."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer

from epsseg_monai.handlers import GradientClippingHandler, LossTermsHandler, SparseDiceHandler
from epsseg_monai.metrics import SparseDiceMetric

# ------------------------------------------------------------------ LossTermsHandler
TERMS = [{"loss": 1.0, "kl": 4.0}, {"loss": 2.0, "kl": 8.0}, {"loss": 6.0, "kl": 0.0}]


def _terms_engine(loss: SimpleNamespace) -> Engine:
    """An engine whose iterations set ``loss.terms`` to the batch's values times the epoch number."""

    def step(engine: Engine, batch: dict[str, float]) -> None:
        loss.terms = {k: torch.tensor(v * engine.state.epoch) for k, v in batch.items()}

    return Engine(step)


def test_loss_terms_epoch_means() -> None:
    loss = SimpleNamespace(terms=None)
    engine = _terms_engine(loss)
    LossTermsHandler(loss).attach(engine)
    seen: list[dict[str, float]] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    engine.run(TERMS, max_epochs=2)
    # epoch 1: plain means; epoch 2: values doubled, sums reset at the start of the epoch
    assert seen[0] == pytest.approx({"train_loss": 3.0, "train_kl": 4.0})
    assert seen[1] == pytest.approx({"train_loss": 6.0, "train_kl": 8.0})
    assert all(isinstance(v, float) for v in seen[1].values())


def test_loss_terms_prefix_and_missing_terms() -> None:
    loss = SimpleNamespace(terms=None)

    def step(engine: Engine, batch: dict[str, float] | None) -> None:
        loss.terms = batch  # None: the loss was not called in this iteration

    engine = Engine(step)
    LossTermsHandler(loss, prefix="val_").attach(engine)
    engine.run([{"ce": 1.0}, None, {"ce": 3.0}], max_epochs=1)
    assert engine.state.metrics == pytest.approx({"val_ce": 2.0})  # the iteration without terms is not counted


def test_loss_terms_without_terms_attribute() -> None:
    engine = Engine(lambda e, b: None)
    LossTermsHandler(object()).attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert engine.state.metrics == {}


# ------------------------------------------------------------------ SparseDiceHandler
def _probs(pred: list[list[int]], num_classes: int) -> torch.Tensor:
    """``(1, C, H, W)`` probabilities whose argmax + 1 is ``pred``; zero where ``pred`` is 0."""
    p = torch.tensor(pred)
    one_hot = torch.nn.functional.one_hot(p.clamp_min(1) - 1, num_classes).movedim(-1, 0).float()
    return ((0.6 * one_hot + 0.4 / num_classes) * (p > 0))[None]


#: two iterations; counts per class (TP, FP, FN): class 1 (3, 1, 1), class 2 (1, 1, 1), class 3 absent
OUTPUTS = [
    {"pred": _probs([[1, 1, 2], [0, 1, 2]], 3), "label": torch.tensor([[[[1, 1, 1], [1, 2, 0]]]])},
    {"pred": _probs([[1, 2]], 3), "label": torch.tensor([[[[1, 2]]]])},
]


def test_sparse_dice_handler_records_mean_and_per_class() -> None:
    engine = Engine(lambda e, batch: batch)
    SparseDiceHandler(3, class_names=["cell", "membrane", "mito"]).attach(engine, "val_dice")
    engine.run(OUTPUTS, max_epochs=1)
    m = engine.state.metrics
    dice = [2 * 3 / (6 + 1 + 1), 2 * 1 / (2 + 1 + 1)]
    assert m["val_dice_cell"] == pytest.approx(dice[0])
    assert m["val_dice_membrane"] == pytest.approx(dice[1])
    assert m["val_dice_mito"] != m["val_dice_mito"]  # NaN: the class is absent
    assert m["val_dice"] == pytest.approx(sum(dice) / 2)
    # the same as the metric on its own
    metric = SparseDiceMetric(3)
    for out in OUTPUTS:
        metric(out["pred"], out["label"])
    assert m["val_dice"] == pytest.approx(metric.aggregate().item())


def test_sparse_dice_handler_default_names_and_reset_per_epoch() -> None:
    def step(engine: Engine, batch: dict) -> dict:
        # second epoch: every prediction correct
        return batch if engine.state.epoch == 1 else {**batch, "pred": _probs(batch["label"][0, 0].tolist(), 3)}

    engine = Engine(step)
    SparseDiceHandler(3).attach(engine, "dice")
    seen: list[dict] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    engine.run(OUTPUTS, max_epochs=2)
    assert {"dice", "dice_class1", "dice_class2", "dice_class3"} <= set(seen[0])
    assert seen[0]["dice"] < 1.0
    assert seen[1]["dice"] == 1.0 and seen[1]["dice_class1"] == 1.0 and seen[1]["dice_class2"] == 1.0


def test_sparse_dice_handler_class_names_length() -> None:
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        SparseDiceHandler(3, class_names=["a", "b"])


# ------------------------------------------------------------------ GradientClippingHandler
def _grad_norm(net: torch.nn.Module, norm_type: float = 2.0) -> float:
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    return float(grads.norm(norm_type))


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_clipping_direct_call(norm_type: float) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    (100 * net(torch.randn(5, 3)).square().sum()).backward()
    before = [p.grad.clone() for p in net.parameters()]
    assert _grad_norm(net, norm_type) > 10
    GradientClippingHandler(net, max_norm=0.5, norm_type=norm_type)(Engine(lambda e, b: None))
    assert _grad_norm(net, norm_type) == pytest.approx(0.5, rel=1e-4)
    # a common rescaling: the direction is kept
    scale = net[0].weight.grad.flatten()[0] / before[0].flatten()[0]
    for p, b in zip(net.parameters(), before):
        torch.testing.assert_close(p.grad, b * scale)


def test_small_gradients_are_unchanged() -> None:
    net = torch.nn.Linear(3, 2)
    (1e-3 * net(torch.ones(1, 3)).sum()).backward()
    before = [p.grad.clone() for p in net.parameters()]
    GradientClippingHandler(net, max_norm=1.0)(Engine(lambda e, b: None))
    for p, b in zip(net.parameters(), before):
        torch.testing.assert_close(p.grad, b)


def _trainer(max_norm: float | None, amp: bool = False) -> tuple[SupervisedTrainer, torch.nn.Module]:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    data = [{"image": torch.ones(4, 3), "label": torch.full((4, 2), 100.0)}]  # a large loss gradient
    handlers = [] if max_norm is None else [GradientClippingHandler(net, max_norm=max_norm)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1.0),
        loss_function=torch.nn.MSELoss(),
        train_handlers=handlers,
        amp=amp,
    )
    return trainer, net


def _update_norm(trainer: SupervisedTrainer, net: torch.nn.Module) -> float:
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    return float(torch.cat([(p.detach() - b).flatten() for p, b in zip(net.parameters(), before)]).norm())


def test_clipping_in_supervised_trainer_acts_before_the_step() -> None:
    """With SGD (lr 1) the parameter update is the gradient at step time: its norm is ``max_norm``."""
    trainer, net = _trainer(None)
    assert _update_norm(trainer, net) > 10  # without the handler
    trainer, net = _trainer(0.25)
    assert _update_norm(trainer, net) == pytest.approx(0.25, rel=1e-4)
    assert _grad_norm(net) == pytest.approx(0.25, rel=1e-4)


def test_clipping_with_amp_grad_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    # SupervisedTrainer.run() makes torch.cuda.amp.GradScaler(); a CPU scaler reproduces the path without a GPU
    monkeypatch.setattr(torch.cuda.amp, "GradScaler", lambda: torch.amp.GradScaler("cpu", init_scale=1024.0))
    trainer, net = _trainer(0.25, amp=True)
    with warnings.catch_warnings():  # autocast("cuda") warns that it is disabled on a CPU-only machine
        warnings.simplefilter("ignore", UserWarning)
        norm = _update_norm(trainer, net)
    assert trainer.scaler is not None and trainer.scaler.get_scale() == 1024.0  # no overflow: the step was taken
    assert norm == pytest.approx(0.25, rel=1e-4)
