"""Tests of ``benchmarks/patch_context.py``: patch-mode against dense predictions at the same clicks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.patch_context import click_mean_dice, compare_to_dense, patch_predictions
from epsseg_monai.inferers import DenseInferer
from epsseg_monai.metrics import predict_at_clicks
from tests.inferers.test_dense import CASES, images, network, reference_patch


def test_compare_counts_agreement_and_dice_per_prediction() -> None:
    labels = torch.tensor([1, 1, 2, 2])
    dense = torch.tensor([1, 2, 2, 2])
    patch = torch.tensor([1, 1, 2, 2])
    result = compare_to_dense(dense, patch, labels, num_classes=2)
    assert result["agreement"] == pytest.approx(0.75)
    assert result["patch_dice"] == pytest.approx(1.0)
    # dense: class 1 TP 1, FN 1 -> 2/3; class 2 TP 2, FP 1 -> 4/5
    assert result["dense_dice"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # classes absent from both maps have no Dice (NaN) and are left out of the mean
    assert click_mean_dice(torch.tensor([1, 1]), torch.tensor([1, 1]), 3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ"):
        compare_to_dense(dense, patch[:3], labels, num_classes=2)


def test_patch_predictions_follow_the_dense_click_order() -> None:
    """With patches wider than the receptive field both predictors agree click by click (so the orders match)."""
    net = network(2)
    patch, window = CASES[2]
    radius = net.dense_receptive_field()
    spatial = (2 * radius + 6, 2 * radius + 5)
    image = images(spatial, batch=1, seed=3)[0].numpy()
    label = np.zeros(spatial, dtype=np.int64)
    rng = np.random.default_rng(0)
    for _ in range(12):  # clicks away from the image border, classes 1-3
        label[rng.integers(radius, spatial[0] - radius), rng.integers(radius, spatial[1] - radius)] = rng.integers(1, 4)
    items = [{"image": image, "label": label}]
    _, probs, labels = predict_at_clicks(net, items, DenseInferer(), 3)
    dense = probs.argmax(0) + 1
    assert len(torch.unique(dense)) > 1  # a constant prediction would agree in any order
    wide = patch_predictions(net, items, reference_patch(patch, window, radius), amp=False)
    assert torch.equal(wide, dense)
    narrow = patch_predictions(net, items, patch, amp=False)  # the training patch: its own border is in view
    assert narrow.shape == dense.shape
