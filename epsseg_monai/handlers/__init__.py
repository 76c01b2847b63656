"""Ignite handlers: per-class sparse Dice, the ε-Seg loss terms, gradient clipping, semi-supervised schedule,
learning-rate decay over a time budget."""

from __future__ import annotations

from .gradient_clipping import GradientClippingHandler
from .loss_terms import LossTermsHandler
from .lr_time_decay import TimeBudgetLRDecay
from .semi_supervised import SemiSupervisedScheduleHandler
from .sparse_dice import SparseDiceHandler

__all__ = [
    "GradientClippingHandler",
    "LossTermsHandler",
    "SemiSupervisedScheduleHandler",
    "SparseDiceHandler",
    "TimeBudgetLRDecay",
]
