"""Glue for ``monai.engines``: batch preparation for ε-Seg training and sparse-point validation, phase hand-over."""

from __future__ import annotations

from .prepare_batch import PrepareEpsSegBatch, PrepareSparseValidationBatch
from .semi_supervised import keep_supervised_model

__all__ = ["PrepareEpsSegBatch", "PrepareSparseValidationBatch", "keep_supervised_model"]
