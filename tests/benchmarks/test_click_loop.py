"""Tests of ``benchmarks/click_loop.py``'s simulated user (the loop itself trains for minutes: run the benchmark)."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.click_loop import balanced_clicks, label_clicks, random_clicks, split_evenly, suggested_clicks
from tests.inferers.test_dense import network


def test_split_evenly() -> None:
    assert split_evenly(10, 3) == [4, 3, 3] and sum(split_evenly(7, 12)) == 7


def test_random_and_balanced_clicks_only_on_unlabelled_pixels() -> None:
    rng = np.random.default_rng(0)
    dense = rng.integers(1, 4, size=(2, 30, 30))
    labels = np.zeros_like(dense)
    labels[0, :10] = dense[0, :10]  # 300 pixels already clicked
    clicks = random_clicks(labels, 50, np.random.default_rng(1))
    assert len(set(clicks)) == 50 and all(labels[c] == 0 for c in clicks)
    clicks = balanced_clicks(labels, dense, 30, 3, np.random.default_rng(1))
    classes = np.bincount([dense[c] for c in clicks], minlength=4)[1:]
    assert classes.tolist() == [10, 10, 10] and all(labels[c] == 0 for c in clicks)
    new = label_clicks(labels, dense, clicks)
    assert (new > 0).sum() == 330 and all(new[c] == dense[c] for c in clicks)
    assert (labels > 0).sum() == 300  # the input is not modified


def test_suggested_clicks_avoid_existing_clicks() -> None:
    net = network(2)
    images = np.random.default_rng(0).normal(size=(2, 40, 40)).astype(np.float32)
    labels = np.zeros((2, 40, 40), np.int64)
    labels[0, 20, 20] = 1
    clicks = suggested_clicks(net, images, labels, {"mean": [0.0], "std": [1.0]}, 5, patch_size=16)
    assert 1 <= len(clicks) <= 5 and {c[0] for c in clicks} <= {0, 1}
    assert all(np.hypot(c[1] - 20, c[2] - 20) >= 4 for c in clicks if c[0] == 0)
    assert torch.is_grad_enabled()
