"""Per-class Dice over the labelled pixels only (sparse points or dense maps), accumulated over a dataset."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics import CumulativeIterationMetric

from ..utils import labels_from_probabilities

__all__ = ["SparseDiceMetric", "dice_counts", "dice_from_counts"]


def dice_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """True positives, false positives and false negatives per class, on pixels labelled in both maps.

    Args:
        pred: predicted class ids ``0..C`` (``0`` = not predicted), any shape.
        target: true class ids ``0..C`` (``0`` = unlabelled), same shape.
        num_classes: ``C``.

    Returns:
        ``(C, 3)`` long tensor of (TP, FP, FN) for classes ``1..C``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(target.shape)}.")
    valid = (pred > 0) & (target > 0)
    p, t = pred[valid].long(), target[valid].long()
    if (p > num_classes).any() or (t > num_classes).any():
        raise ValueError(f"class ids above num_classes={num_classes} found.")
    tp = torch.bincount(p[p == t], minlength=num_classes + 1)[1:]
    pc = torch.bincount(p, minlength=num_classes + 1)[1:]
    tc = torch.bincount(t, minlength=num_classes + 1)[1:]
    return torch.stack([tp, pc - tp, tc - tp], dim=1)


def dice_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Dice per class from ``(..., C, 3)`` counts; NaN where a class appears in neither map."""
    counts = counts.double()
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.full_like(denom, float("nan")))


class SparseDiceMetric(CumulativeIterationMetric):
    """Dice per class of predicted vs. annotated class ids, counting only labelled, predicted pixels.

    Suited to validation on sparse points: unlabelled pixels (label ``0``) and pixels the inferer did not
    predict (all probabilities ``0``) are ignored. Counts are summed over every image before the Dice is
    computed, so images with few points do not get the weight of a whole image.

    Args:
        num_classes: number of classes ``C``.
        reduction: ``"mean"`` (mean Dice over the classes present) or ``"none"`` (``(C,)`` per-class Dice).
    """

    def __init__(self, num_classes: int, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
        self.num_classes = num_classes
        self.reduction = reduction
        self.per_class: torch.Tensor | None = None

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``y_pred``: ``(B, C, *spatial)`` probabilities; ``y``: ``(B, 1, *spatial)`` ids ``0..C``."""
        if y_pred.ndim < 3 or y_pred.shape[1] != self.num_classes:
            raise ValueError(f"y_pred must be (B, {self.num_classes}, *spatial), got {tuple(y_pred.shape)}.")
        if y.shape[0] != y_pred.shape[0] or y.shape[1] != 1 or y.shape[2:] != y_pred.shape[2:]:
            raise ValueError(f"y must be (B, 1, *spatial) matching y_pred {tuple(y_pred.shape)}, got {tuple(y.shape)}.")
        counts = []
        for probs, labels in zip(y_pred, y):
            labelled = labels[0] > 0  # only labelled pixels count: skip the argmax elsewhere
            pred = labels_from_probabilities(probs[:, labelled], dim=0)
            counts.append(dice_counts(pred, labels[0][labelled], self.num_classes))
        return torch.stack(counts)

    def aggregate(self, reduction: str | None = None) -> torch.Tensor:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            counts = torch.zeros((self.num_classes, 3), dtype=torch.long)
        else:
            counts = data.reshape(-1, self.num_classes, 3).sum(0)
        self.per_class = dice_from_counts(counts).float()
        if (reduction or self.reduction) == "none":
            return self.per_class
        present = self.per_class[~torch.isnan(self.per_class)]
        return present.mean() if present.numel() else torch.tensor(float("nan"))


def _class_names(num_classes: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"class{c}" for c in range(1, num_classes + 1)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes.")
    return list(names)
