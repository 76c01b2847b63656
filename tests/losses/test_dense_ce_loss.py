"""Tests of ``epsseg_monai.losses.DenseSparseCrossEntropyLoss`` and the dense term of ``EpsSegLoss``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from epsseg_monai.losses import DenseSparseCrossEntropyLoss, EpsSegLoss


def labelled_map(shape: tuple[int, ...], num_classes: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, num_classes + 1, shape, generator=g)
    return torch.where(torch.rand(shape, generator=g) < 0.2, labels, torch.zeros_like(labels))


@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)], ids=["2d", "3d"])
def test_mean_over_labelled_pixels_only(spatial: tuple[int, ...]) -> None:
    logits = torch.randn((2, 3, *spatial))
    labels = labelled_map((2, *spatial))
    assert (labels > 0).sum() > 1
    got = DenseSparseCrossEntropyLoss()(logits, labels)
    sel = labels > 0
    flat = logits.movedim(1, -1)[sel]
    torch.testing.assert_close(got, F.cross_entropy(flat, labels[sel] - 1))
    # unlabelled pixels do not matter
    changed = torch.where(sel[:, None], logits, torch.randn_like(logits) * 100)
    torch.testing.assert_close(DenseSparseCrossEntropyLoss()(changed, labels), got)
    # a channel axis on the labels is accepted
    torch.testing.assert_close(DenseSparseCrossEntropyLoss()(logits, labels[:, None]), got)


def test_reductions_weights_and_no_label() -> None:
    logits = torch.randn((2, 3, 5, 5))
    labels = labelled_map((2, 5, 5), seed=1)
    per_pixel = DenseSparseCrossEntropyLoss(reduction="none")(logits, labels)
    assert per_pixel.shape == labels.shape and (per_pixel[labels == 0] == 0).all()
    torch.testing.assert_close(DenseSparseCrossEntropyLoss(reduction="sum")(logits, labels), per_pixel.sum())
    w = torch.tensor([1.0, 2.0, 0.5])
    sel = labels > 0
    expected = F.cross_entropy(logits.movedim(1, -1)[sel], labels[sel] - 1, weight=w)
    torch.testing.assert_close(DenseSparseCrossEntropyLoss(class_weights=w)(logits, labels), expected)
    assert DenseSparseCrossEntropyLoss()(logits, torch.zeros_like(labels)).item() == 0.0


def test_shape_and_label_checks() -> None:
    loss = DenseSparseCrossEntropyLoss()
    with pytest.raises(ValueError, match="Expected logits B C"):
        loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="B\\[spatial\\] or B1\\[spatial\\]"):
        loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be in 0..3"):
        loss(torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 4))


def test_eps_seg_loss_adds_the_dense_term_when_weighted() -> None:
    from tests.losses.test_eps_seg_loss import outputs_and_data

    _, outputs, target = outputs_and_data()
    labels = torch.tensor([1, 2, 3, 0, 1, 2])
    dense_logits = torch.randn((2, 3, 6, 6), requires_grad=True)
    dense_labels = labelled_map((2, 6, 6), num_classes=3, seed=2)
    outputs = {**outputs, "dense_logits": dense_logits, "dense_labels": dense_labels}
    plain = EpsSegLoss()(outputs, target, labels)
    assert "dense_ce" not in plain  # weight 0: the paper's objective
    terms = EpsSegLoss(dense_ce_weight=0.5)(outputs, target, labels)
    expected = DenseSparseCrossEntropyLoss()(dense_logits, dense_labels)
    torch.testing.assert_close(terms["dense_ce"], expected)
    torch.testing.assert_close(terms["loss"], plain["loss"] + 0.5 * expected)
    assert terms["dense_pixels"].item() == (dense_labels > 0).sum().item()
    terms["loss"].backward()
    assert dense_logits.grad is not None and dense_logits.grad.abs().sum() > 0
