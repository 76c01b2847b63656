"""Tests of ``epsseg_monai.metrics.sparse_dice``: Dice over labelled (and predicted) pixels, summed counts."""

from __future__ import annotations

import math

import pytest
import torch

from epsseg_monai.metrics import SparseDiceMetric, dice_counts, dice_from_counts

#: pixel:   0  1  2  3  4  5  6
PRED = [1, 1, 2, 0, 3, 2, 1]  # pixel 3 not predicted
TARGET = [1, 2, 2, 1, 0, 2, 3]  # pixel 4 unlabelled
#: per class (TP, FP, FN) on pixels 0, 1, 2, 5, 6
COUNTS = [[1, 2, 0], [2, 0, 1], [0, 0, 1]]


def test_dice_counts_hand_made() -> None:
    counts = dice_counts(torch.tensor(PRED), torch.tensor(TARGET), 3)
    assert counts.dtype == torch.long and counts.shape == (3, 3)
    assert counts.tolist() == COUNTS


def test_dice_counts_any_shape_and_extra_classes() -> None:
    counts = dice_counts(torch.tensor(PRED).reshape(1, 7, 1), torch.tensor(TARGET).reshape(1, 7, 1), 5)
    assert counts.tolist() == COUNTS + [[0, 0, 0], [0, 0, 0]]


def test_dice_counts_ignore_zero_in_either_map() -> None:
    pred = torch.tensor([0, 0, 2, 2])
    target = torch.tensor([1, 2, 0, 0])
    assert dice_counts(pred, target, 2).tolist() == [[0, 0, 0], [0, 0, 0]]


def test_dice_counts_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice_counts(torch.zeros(3), torch.zeros(4), 2)
    with pytest.raises(ValueError, match="above num_classes=2"):
        dice_counts(torch.tensor([3, 1]), torch.tensor([1, 1]), 2)
    with pytest.raises(ValueError, match="above num_classes=2"):
        dice_counts(torch.tensor([1, 1]), torch.tensor([1, 3]), 2)
    # an out-of-range id on an ignored pixel does not matter
    assert dice_counts(torch.tensor([3, 1]), torch.tensor([0, 1]), 2).tolist() == [[1, 0, 0], [0, 0, 0]]


def test_dice_from_counts() -> None:
    dice = dice_from_counts(torch.tensor(COUNTS + [[0, 0, 0]]))
    assert dice.dtype == torch.float64
    assert dice[:3].tolist() == pytest.approx([2 / 4, 4 / 5, 0.0])
    assert math.isnan(dice[3])
    batched = dice_from_counts(torch.tensor([COUNTS, [[5, 0, 0], [0, 0, 0], [1, 1, 1]]]))
    assert batched.shape == (2, 3)
    assert batched[1, 0] == 1.0 and math.isnan(batched[1, 1]) and batched[1, 2] == pytest.approx(0.5)


def one_hot_probs(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, C, *spatial)`` probabilities whose argmax + 1 is ``pred`` ``(B, *spatial)``; all 0 where ``pred == 0``."""
    one_hot = torch.nn.functional.one_hot(pred.clamp_min(1) - 1, num_classes).movedim(-1, 1).float()
    probs = 0.7 * one_hot + 0.3 / num_classes  # sums to 1, argmax unchanged, no zero entry
    return probs * (pred > 0)[:, None]


def test_metric_single_batch_matches_counts() -> None:
    pred = torch.tensor(PRED + [1]).reshape(1, 2, 4)
    target = torch.tensor(TARGET + [0]).reshape(1, 1, 2, 4)
    metric = SparseDiceMetric(3, reduction="none")
    per_image = metric(one_hot_probs(pred, 3), target)
    assert per_image.tolist() == [COUNTS]
    assert metric.aggregate().tolist() == pytest.approx([0.5, 0.8, 0.0])
    assert SparseDiceMetric(3)(one_hot_probs(pred, 3), target).shape == (1, 3, 3)


def test_metric_sums_counts_over_calls() -> None:
    """Image A: 10 correct class-1 points. Image B: 1 class-1 point predicted as class 2.

    Summed counts give class 1 a Dice of 20/21; the mean of per-image Dice would give (1 + 0) / 2.
    """
    pred_a = torch.ones((1, 2, 5), dtype=torch.long)
    label_a = torch.ones((1, 1, 2, 5), dtype=torch.long)
    pred_b = torch.zeros((1, 2, 5), dtype=torch.long)
    pred_b[0, 0, 0] = 2
    label_b = torch.zeros((1, 1, 2, 5), dtype=torch.long)
    label_b[0, 0, 0, 0] = 1
    metric = SparseDiceMetric(2, reduction="none")
    metric(one_hot_probs(pred_a, 2), label_a)
    metric(one_hot_probs(pred_b, 2), label_b)
    per_class = metric.aggregate()
    assert per_class[0].item() == pytest.approx(20 / 21)
    assert per_class[1].item() == 0.0  # one false positive, no true positive
    assert per_class[0].item() != pytest.approx(0.5)
    assert metric.aggregate("mean").item() == pytest.approx((20 / 21 + 0.0) / 2)
    # the same images in one batch or as a list of single images give the same result
    batch = SparseDiceMetric(2, reduction="none")
    batch(torch.cat([one_hot_probs(pred_a, 2), one_hot_probs(pred_b, 2)]), torch.cat([label_a, label_b]))
    torch.testing.assert_close(batch.aggregate(), per_class)
    listed = SparseDiceMetric(2, reduction="none")
    listed([one_hot_probs(pred_a, 2)[0], one_hot_probs(pred_b, 2)[0]], [label_a[0], label_b[0]])
    torch.testing.assert_close(listed.aggregate(), per_class)


def test_metric_reduction_mean_ignores_absent_classes() -> None:
    pred = torch.tensor([[1, 1, 2, 2]])
    label = torch.tensor([[[1, 2, 2, 2]]])
    metric = SparseDiceMetric(4)  # classes 3 and 4 appear nowhere
    metric(one_hot_probs(pred, 4), label)
    per_class = metric.aggregate(reduction="none")
    assert per_class[:2].tolist() == pytest.approx([2 / 3, 4 / 5])
    assert torch.isnan(per_class[2:]).all()
    assert metric.aggregate().item() == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert metric.per_class is not None and torch.equal(torch.isnan(metric.per_class), torch.isnan(per_class))


def test_metric_unpredicted_pixels_are_ignored() -> None:
    probs = torch.zeros((1, 2, 1, 3))
    probs[0, :, 0, 0] = torch.tensor([0.9, 0.1])  # predicted class 1, label 1
    probs[0, :, 0, 2] = torch.tensor([0.2, 0.8])  # predicted class 2, label 1
    label = torch.tensor([[[[1, 2, 1]]]])  # pixel 1 is labelled but not predicted
    metric = SparseDiceMetric(2, reduction="none")
    assert metric(probs, label).tolist() == [[[1, 0, 1], [0, 1, 0]]]


def test_metric_empty_and_reset() -> None:
    metric = SparseDiceMetric(2)
    assert math.isnan(metric.aggregate().item())
    assert torch.isnan(metric.aggregate("none")).all()
    metric(one_hot_probs(torch.tensor([[1, 2]]), 2), torch.tensor([[[1, 2]]]))
    assert metric.aggregate().item() == 1.0
    metric.reset()
    assert math.isnan(metric.aggregate().item())


def test_metric_shape_errors() -> None:
    metric = SparseDiceMetric(3)
    with pytest.raises(ValueError, match="y_pred must be"):
        metric(torch.zeros((1, 2, 4, 4)), torch.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="y_pred must be"):
        metric(torch.zeros((1, 3)), torch.zeros((1, 1)))
    with pytest.raises(ValueError, match="y must be"):
        metric(torch.zeros((1, 3, 4, 4)), torch.zeros((1, 1, 4, 5)))
    with pytest.raises(ValueError, match="y must be"):
        metric(torch.zeros((1, 3, 4, 4)), torch.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="y must be"):
        metric(torch.zeros((2, 3, 4, 4)), torch.zeros((1, 1, 4, 4)))


def test_metric_bad_reduction() -> None:
    with pytest.raises(ValueError, match="reduction"):
        SparseDiceMetric(3, reduction="sum")
