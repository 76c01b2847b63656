from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from epsseg_monai.handlers import WeightAveraging
from epsseg_monai.handlers.weight_averaging import ema_with_warmup


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1))


def training_engine(net: nn.Module, steps: int) -> Engine:
    """An engine that takes one Adam step on random data per iteration."""
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)

    def step(engine: Engine, batch: torch.Tensor) -> float:
        net.train()
        optimizer.zero_grad()
        loss = net(batch).square().mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    engine = Engine(step)
    engine.data = [torch.randn(4, 1, 6, 6) for _ in range(steps)]
    return engine


def test_off_validates_the_live_network_and_adds_no_handler():
    net = small_net()
    for decay in (None, 0, 0.0):
        averaging = WeightAveraging(net, decay)
        assert not averaging.enabled and averaging.evaluated_network is net
        engine = Engine(lambda e, b: None)
        averaging.attach(engine)
        assert not engine.has_event_handler(averaging, Events.ITERATION_COMPLETED)
        assert averaging.state_dict() == {}


@pytest.mark.parametrize("decay", [-0.1, 1.0, 2])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match=r"weight_averaging .* \[0, 1\)"):
        WeightAveraging(small_net(), decay)


def test_the_average_follows_the_warm_up_formula_and_averages_batch_norm_statistics():
    net = small_net()
    averaging = WeightAveraging(net, decay=0.9)
    engine = training_engine(net, steps=5)
    averaging.attach(engine)
    expected = None
    history = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: history.append(
        {k: v.detach().clone() for k, v in net.state_dict().items()}))  # fmt: skip
    engine.run(engine.data, max_epochs=1)
    for n, state in enumerate(history):  # n = number of earlier updates
        if expected is None:
            expected = {k: v.clone() for k, v in state.items()}
            continue
        weight = 1 - min(0.9, (1 + n) / (10 + n))
        for k, v in state.items():
            expected[k] = expected[k].lerp(v, weight) if v.is_floating_point() else v.clone()
    averaged = averaging.evaluated_network.state_dict()
    live = net.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(averaged[k], v, msg=f"{k} is not the warm-up EMA")
    assert not torch.equal(averaged["1.running_mean"], live["1.running_mean"])  # batch-norm statistics averaged
    assert torch.equal(averaged["1.num_batches_tracked"], live["1.num_batches_tracked"])
    assert not torch.equal(averaged["0.weight"], live["0.weight"])
    assert averaging.evaluated_network is not net and not averaging.evaluated_network.training


def test_first_update_copies_the_live_weights():
    net = small_net()
    averaging = WeightAveraging(net, decay=0.999)
    with torch.no_grad():
        net[0].weight.add_(1.0)  # e.g. pretrained weights loaded after the handler was built
    averaging()
    for k, v in net.state_dict().items():
        assert torch.equal(averaging.evaluated_network.state_dict()[k], v), k


def test_state_round_trip_restores_the_average():
    net = small_net()
    averaging = WeightAveraging(net, decay=0.8)
    engine = training_engine(net, steps=4)
    averaging.attach(engine)
    engine.run(engine.data, max_epochs=1)
    state = averaging.state_dict()
    restored = WeightAveraging(small_net(), decay=0.8)
    restored.load_state_dict(state)
    for k, v in averaging.evaluated_network.state_dict().items():
        assert torch.equal(restored.evaluated_network.state_dict()[k], v), k
    assert int(restored.average.n_averaged) == 4


def test_loading_a_mismatched_state_warns(caplog):
    with caplog.at_level(logging.WARNING):
        WeightAveraging(small_net(), decay=0.9).load_state_dict({})
        WeightAveraging(small_net(), None).load_state_dict(WeightAveraging(small_net(), 0.9).state_dict())
    assert "starts afresh" in caplog.text and "averaging is off" in caplog.text


def test_a_data_parallel_wrapper_is_unwrapped():
    net = small_net()
    averaging = WeightAveraging(nn.DataParallel(net), decay=0.9)
    assert averaging.network is net
    assert set(averaging.evaluated_network.state_dict()) == set(net.state_dict())


def test_ema_function_copies_integer_tensors():
    fn = ema_with_warmup(0.5)
    averaged, current = [torch.zeros(2), torch.tensor(3)], [torch.ones(2), torch.tensor(7)]
    fn(averaged, current, torch.tensor(100))
    torch.testing.assert_close(averaged[0], torch.full((2,), 0.5))
    assert int(averaged[1]) == 7
