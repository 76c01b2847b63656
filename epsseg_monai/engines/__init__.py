"""Glue for ``monai.engines``: batch preparation for ε-Seg training and sparse-point validation, phase hand-over."""

from __future__ import annotations

from .prepare_batch import PrepareEpsSegBatch, PrepareSparseValidationBatch
from .self_training import keep_better_model, load_weights
from .semi_supervised import keep_supervised_model

__all__ = [
    "PrepareEpsSegBatch",
    "PrepareSparseValidationBatch",
    "keep_better_model",
    "keep_supervised_model",
    "load_weights",
]
