"""Clip gradients between backward and optimiser step of a ``monai.engines.SupervisedTrainer``."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["GradientClippingHandler"]


class GradientClippingHandler:
    """Clip the gradient norm of ``network`` after every backward pass (ε-Seg uses a norm of 1).

    Args:
        network: the trained module.
        max_norm: largest allowed total gradient norm.
        norm_type: type of the norm.
    """

    def __init__(self, network: torch.nn.Module, max_norm: float = 1.0, norm_type: float = 2.0) -> None:
        self.network, self.max_norm, self.norm_type = network, max_norm, norm_type

    def attach(self, engine: Engine) -> None:
        if getattr(engine, "accumulation_steps", 1) > 1:
            raise ValueError("GradientClippingHandler does not support gradient accumulation (accumulation_steps > 1).")
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            # mixed precision: the gradients are still multiplied by the loss scale; clip the true ones
            scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.max_norm, self.norm_type)
