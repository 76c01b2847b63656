"""Tests of the class-share and dense-Dice estimates from held-out clicks (``epsseg_monai.metrics.class_shares``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epsseg_monai.metrics import (
    calibrate_after_training,
    click_confusion,
    dice_counts,
    dice_from_counts,
    estimate_class_shares,
    estimated_dense_dice,
    select_prior_strength,
    shift_gain_confidence,
)


def test_click_confusion_counts_true_by_predicted_and_ignores_unlabelled():
    pred = torch.tensor([1, 2, 2, 3, 1, 0])
    target = torch.tensor([1, 2, 1, 3, 0, 2])
    conf = click_confusion(pred, target, 3)
    np.testing.assert_array_equal(conf.numpy(), [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="differs"):
        click_confusion(pred, target[:3], 3)
    with pytest.raises(ValueError, match="outside"):
        click_confusion(pred, target, 2)


def test_adjusted_count_recovers_the_true_shares():
    rates = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
    shares = np.array([0.74, 0.2, 0.06])
    q = rates.T @ shares  # what the classifier predicts on the images
    est = estimate_class_shares(torch.as_tensor(rates * 300), q)
    np.testing.assert_allclose(est.numpy(), shares, atol=1e-9)
    assert not np.allclose(q, shares, atol=0.02)  # the predicted shares alone are off


def test_estimated_dense_dice_is_exact_when_every_pixel_is_a_click():
    g = torch.Generator().manual_seed(0)
    target = torch.multinomial(torch.tensor([0.7, 0.2, 0.07, 0.03]), 50000, replacement=True, generator=g) + 1
    noise = torch.randint(1, 5, target.shape, generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.15, noise, target)
    shares = torch.bincount(target - 1, minlength=4).double() / target.numel()
    est = estimated_dense_dice(click_confusion(pred, target, 4), shares)
    torch.testing.assert_close(est, dice_from_counts(dice_counts(pred, target, 4)))


def test_balanced_clicks_estimate_the_dense_dice_that_their_plain_dice_overstates():
    """Class-balanced clicks of a map whose rare class is over-predicted: the weighted estimate is near the dense
    Dice, the plain click Dice is not."""
    g = torch.Generator().manual_seed(1)
    target = torch.multinomial(torch.tensor([0.9, 0.1]), 200000, replacement=True, generator=g) + 1
    flip = (target == 1) & (torch.rand(target.shape, generator=g) < 0.08)  # 8 % of class 1 predicted as class 2
    pred = torch.where(flip, torch.full_like(target, 2), target)
    dense = dice_from_counts(dice_counts(pred, target, 2)).mean().item()
    clicks = torch.cat(
        [torch.nonzero(target == k)[:, 0][torch.randperm(int((target == k).sum()), generator=g)[:2000]] for k in (1, 2)]
    )
    conf = click_confusion(pred[clicks], target[clicks], 2)
    plain = dice_from_counts(dice_counts(pred[clicks], target[clicks], 2)).mean().item()
    shares = estimate_class_shares(conf, torch.bincount(pred - 1, minlength=2).double() / pred.numel())
    np.testing.assert_allclose(shares.numpy(), [0.9, 0.1], atol=0.01)
    est = estimated_dense_dice(conf, shares).mean().item()
    assert abs(est - dense) < 0.015
    assert plain - dense > 0.1


def _two_overlapping_classes(n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities ``(2, 2n)`` of two unit Gaussians 1.5 apart at ``n`` clicks of each, and their labels."""
    g = torch.Generator().manual_seed(2)
    labels = torch.cat([torch.ones(n, dtype=torch.long), torch.full((n,), 2, dtype=torch.long)])
    x = torch.where(labels == 1, torch.zeros(2 * n), torch.full((2 * n,), 1.5)) + torch.randn(2 * n, generator=g)
    lik = torch.stack([torch.exp(-0.5 * x**2), torch.exp(-0.5 * (x - 1.5) ** 2)])
    return lik / lik.sum(0), labels


def test_select_prior_strength_shifts_only_when_the_shares_are_unequal():
    probs, labels = _two_overlapping_classes()
    best, scores = select_prior_strength(probs, labels, [0.95, 0.05])
    assert best > 0 and scores[best] > scores[0.0] + 0.05
    best_equal, scores_equal = select_prior_strength(probs, labels, [0.5, 0.5])
    assert best_equal == 0.0 and len(set(scores_equal.values())) == 1


def test_shift_gain_confidence_is_high_for_a_real_gain_and_middling_for_noise():
    probs, labels = _two_overlapping_classes()
    best, _ = select_prior_strength(probs, labels, [0.95, 0.05])
    assert shift_gain_confidence(probs, labels, [0.95, 0.05], best, num_resamples=200) > 0.99
    assert shift_gain_confidence(probs, labels, [0.95, 0.05], 0.0) == 0.5  # no shift, no change

    # 20 clicks per class; the shift towards class 1 corrects one class-1 click and breaks one class-2 click, so
    # whether it gains depends on which clicks a resample holds
    probs = torch.tensor([[0.9, 0.1]] * 19 + [[0.45, 0.55]] + [[0.1, 0.9]] * 19 + [[0.45, 0.55]]).T.double()
    labels = torch.tensor([1] * 20 + [2] * 20)
    plain = probs.argmax(0) + 1
    shifted = (probs * torch.tensor([[1.6], [0.4]])).argmax(0) + 1
    assert (plain != labels).sum() == 1 and (shifted != labels).sum() == 1 and (plain != shifted).sum() == 2
    confidence = shift_gain_confidence(probs, labels, [0.8, 0.2], 1.0, num_resamples=500, seed=0)
    assert 0.1 < confidence < 0.9, confidence
    assert confidence == shift_gain_confidence(probs, labels, [0.8, 0.2], 1.0, num_resamples=500, seed=0)
    with_shares = shift_gain_confidence(probs, labels, [0.8, 0.2], 1.0, predicted_shares=[0.8, 0.2], seed=0)
    assert 0.0 <= with_shares <= 1.0
    with pytest.raises(ValueError, match="click_probs"):
        shift_gain_confidence(probs[:, :5], labels, [0.8, 0.2], 1.0)
    with pytest.raises(ValueError, match="num_resamples"):
        shift_gain_confidence(probs, labels, [0.8, 0.2], 1.0, num_resamples=0)


def test_a_class_without_held_out_clicks_is_named():
    conf = torch.tensor([[5, 0, 0], [1, 4, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"class\(es\) \[3\]"):
        estimate_class_shares(conf, [0.5, 0.3, 0.2])
    with pytest.raises(ValueError, match="predicted_shares must be 2"):
        estimate_class_shares(conf[:2, :2], [0.5, 0.3, 0.2])
    with pytest.raises(ValueError, match="click_probs"):
        select_prior_strength(torch.ones(2, 5), torch.ones(4, dtype=torch.long), [0.5, 0.5])


def test_calibrate_after_training_runs_only_when_asked_and_model_pt_exists(tmp_path, caplog):
    calls = []

    def calibration(overwrite=False):
        calls.append(overwrite)
        return {"strength": 0.5}

    assert calibrate_after_training(calibration, False, tmp_path) is None
    assert calibrate_after_training(calibration, "false", tmp_path) is None
    assert calls == []
    with caplog.at_level("WARNING", logger="epsseg_monai.metrics.class_shares"):
        assert calibrate_after_training(calibration, True, tmp_path) is None
    assert calls == [] and "model.pt" in caplog.text and "skipped" in caplog.text
    (tmp_path / "model.pt").write_bytes(b"weights")
    assert calibrate_after_training(calibration, "true", tmp_path) == {"strength": 0.5}
    assert calls == [True]  # a new calibration always replaces the report of earlier weights
    with pytest.raises(ValueError, match="calibrate_after_training"):
        calibrate_after_training(calibration, "maybe", tmp_path)
