"""Glue for ``monai.engines``: batch preparation for ε-Seg training and sparse-point validation."""

from __future__ import annotations

from .prepare_batch import PrepareEpsSegBatch, PrepareSparseValidationBatch

__all__ = ["PrepareEpsSegBatch", "PrepareSparseValidationBatch"]
