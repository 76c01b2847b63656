"""Metrics: Dice over labelled pixels (validation on sparse points) and folder evaluation against dense labels."""

from __future__ import annotations

from .class_shares import (
    DEFAULT_STRENGTHS,
    calibrate_after_training,
    calibrate_class_priors,
    click_confusion,
    estimate_class_shares,
    estimated_dense_dice,
    load_class_priors,
    predict_at_clicks,
    prior_calibration_transform,
    select_prior_strength,
    shift_gain_confidence,
)
from .evaluate import evaluate_segmentations
from .sparse_dice import SparseDiceMetric, dice_counts, dice_from_counts

__all__ = [
    "DEFAULT_STRENGTHS",
    "SparseDiceMetric",
    "calibrate_after_training",
    "calibrate_class_priors",
    "click_confusion",
    "dice_counts",
    "dice_from_counts",
    "estimate_class_shares",
    "estimated_dense_dice",
    "evaluate_segmentations",
    "load_class_priors",
    "predict_at_clicks",
    "prior_calibration_transform",
    "select_prior_strength",
    "shift_gain_confidence",
]
