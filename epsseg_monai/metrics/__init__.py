"""Metrics: Dice over labelled pixels (validation on sparse points) and folder evaluation against dense labels."""

from __future__ import annotations

from .evaluate import evaluate_segmentations
from .sparse_dice import SparseDiceMetric, dice_counts, dice_from_counts

__all__ = ["SparseDiceMetric", "dice_counts", "dice_from_counts", "evaluate_segmentations"]
