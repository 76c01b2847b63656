"""Weight averaging: an exponential moving average (EMA) of the network's weights, validated and saved as the model.

A short training on a few hundred clicks ends while the weights still jump from step to step, and the validation
Dice on the held-out clicks jumps with them, so the epoch kept as ``model.pt`` is partly chosen by noise. The
average of the recent weights (Polyak averaging; "EMA" in most training codes) is a smoother and usually better
model at no cost in steps. :class:`WeightAveraging` keeps it with torch's own
:class:`torch.optim.swa_utils.AveragedModel` (batch-norm statistics averaged too) and hands the evaluator the
averaged copy instead of the live network: validation, ``model.pt`` and everything read from it (calibration,
inference, export) then use the average, while the optimizer keeps training the live weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..utils import unwrap_network

__all__ = ["WeightAveraging"]

logger = logging.getLogger(__name__)


def ema_with_warmup(decay: float):
    """The ``multi_avg_fn`` of an EMA whose decay grows as ``(1 + n) / (10 + n)`` up to ``decay``.

    Early in training the average then follows the fast-moving weights instead of holding on to the random
    initial ones (the usual warm-up, as in TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``).
    Non-floating tensors (batch norm's ``num_batches_tracked``) take the current value.
    """

    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = int(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for a, c in zip(averaged, current):
            if torch.is_floating_point(a):
                a.lerp_(c, weight)
            else:
                a.copy_(c)

    return average


class WeightAveraging:
    """Exponential moving average of a network's weights, updated after every training iteration.

    Attach to the trainer (the bundle does so in its ``training`` steps) and give the evaluator and the best-model
    saver :attr:`evaluated_network`: the averaged copy, or the live network itself when ``decay`` is ``None`` or
    ``0`` (averaging off, the paper's setting). Its :meth:`state_dict` goes into the training checkpoint so that a
    resumed run goes on with the same average.

    Args:
        network: the trained network (a ``DistributedDataParallel`` / ``DataParallel`` wrapper is unwrapped).
        decay: the EMA's decay per iteration in ``[0, 1)`` (``0.995``: the last ~200 steps weigh most), reached
            after a warm-up (:func:`ema_with_warmup`); ``None`` or ``0`` turns averaging off.

    Example::

        averaging = WeightAveraging(net, decay=0.995)
        averaging.attach(trainer)
        evaluator = SupervisedEvaluator(device, val_loader, averaging.evaluated_network, ...)
    """

    def __init__(self, network: nn.Module, decay: float | None = None) -> None:
        decay = 0.0 if decay is None else float(decay)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"weight_averaging (the EMA decay) must be in [0, 1), or 0 to turn it off; got {decay}.")
        self.network = unwrap_network(network)
        self.decay = decay
        self.average: AveragedModel | None = None
        if decay > 0:
            self.average = AveragedModel(self.network, multi_avg_fn=ema_with_warmup(decay), use_buffers=True)
            self.average.module.eval()

    @property
    def enabled(self) -> bool:
        return self.average is not None

    @property
    def evaluated_network(self) -> nn.Module:
        """The network to validate and save: the averaged copy, or the live network when averaging is off."""
        return self.average.module if self.average is not None else self.network

    def attach(self, engine: Engine) -> None:
        if self.average is not None:
            logger.info("Weight averaging on: EMA decay %s per iteration; validation and model.pt use it.", self.decay)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Fold the live weights into the average (once per training iteration)."""
        if self.average is not None:
            self.average.update_parameters(self.network)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.average is None else self.average.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.average is None:
            if state:
                logger.warning("The checkpoint holds an average of the weights, but averaging is off: it is ignored.")
            return
        if not state:
            logger.warning("The checkpoint holds no average of the weights: the average starts afresh.")
            return
        self.average.load_state_dict(state)
