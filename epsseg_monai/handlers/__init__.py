"""Ignite handlers: per-class sparse Dice, the ε-Seg loss terms, gradient clipping, semi-supervised schedule,
learning-rate decay over a time budget, a resumable time budget, checkpoints that never lose progress, an
average of the weights (EMA) to validate and save."""

from __future__ import annotations

from .checkpoint import BestModelSaver, LastModelSaver, ResumeCheckpointLoader, TrainingCheckpoint, atomic_save
from .early_stop import EarlyStopHandler
from .gradient_clipping import GradientClippingHandler
from .loss_terms import LossTermsHandler
from .lr_time_decay import TimeBudgetLRDecay
from .random_states import RandomStates
from .semi_supervised import SemiSupervisedScheduleHandler
from .sparse_dice import SparseDiceHandler
from .time_budget import TimeBudget
from .tracking import adapt_tracking_handlers
from .weight_averaging import WeightAveraging

__all__ = [
    "ResumeCheckpointLoader",
    "BestModelSaver",
    "EarlyStopHandler",
    "GradientClippingHandler",
    "LastModelSaver",
    "LossTermsHandler",
    "RandomStates",
    "SemiSupervisedScheduleHandler",
    "SparseDiceHandler",
    "TimeBudget",
    "TimeBudgetLRDecay",
    "TrainingCheckpoint",
    "WeightAveraging",
    "adapt_tracking_handlers",
    "atomic_save",
]
