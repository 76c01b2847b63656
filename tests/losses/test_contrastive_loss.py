from __future__ import annotations

import itertools

import pytest
import torch

from epsseg_monai.losses import SparseContrastiveLoss, pairwise_distances


def naive_contrastive(levels, labels, margin, weights, eps=1e-6):
    """Pair-by-pair reference implementation of the documented formula."""
    idx = [i for i in range(len(labels)) if labels[i] != 0]
    classes = sorted({int(labels[i]) for i in idx})
    pos = 0.0
    neg = {pair: 0.0 for pair in itertools.combinations(classes, 2)}
    for w, z in zip(weights, levels):
        flat = z.flatten(1).double()
        same = [(i, j) for i in idx for j in idx if i != j and labels[i] == labels[j]]
        if same:
            pos += w * sum(float((flat[i] - flat[j]).norm()) for i, j in same) / len(same)
        for a, b in neg:
            pairs = [(i, j) for i in idx for j in idx if labels[i] == a and labels[j] == b]
            total = 0.0
            for i, j in pairs:
                d = float((flat[i] - flat[j]).norm())
                if d < margin:
                    total += 1 / (d + eps) + (margin - d) ** 2
            neg[a, b] += w * total / len(pairs)
    values = torch.tensor(list(neg.values()), dtype=torch.float64)
    negative = float((torch.softmax(values, 0) * values).sum()) if len(values) else 0.0
    return 0.5 * pos + 0.5 * negative


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_matches_pairwise_formula(spatial_dims):
    levels = [torch.randn((6, 2) + (4 // 2**i,) * spatial_dims) for i in range(3)]
    labels = torch.tensor([1, 2, 1, 3, 0, 2])
    loss = SparseContrastiveLoss(margin=6.0)
    expected = naive_contrastive(levels, labels, 6.0, [0.25, 0.5, 1.0])
    assert float(loss(levels, labels)) == pytest.approx(expected, rel=1e-4)
    terms = SparseContrastiveLoss(margin=6.0, reduction="none")(levels, labels)
    assert terms.shape == (2,) and float(terms.sum()) == pytest.approx(expected, rel=1e-4)
    assert float(SparseContrastiveLoss(margin=6.0, reduction="mean")(levels, labels)) == pytest.approx(
        expected / 1.75, rel=1e-4
    )


def test_unlabelled_samples_do_not_change_loss():
    levels = [torch.randn(5, 3, 4, 4), torch.randn(5, 3, 2, 2)]
    labels = torch.tensor([1, 2, 1, 2, 3])
    ref = SparseContrastiveLoss(margin=5.0)(levels, labels)
    extra = [torch.cat([z, 50 * torch.randn((4,) + z.shape[1:])]) for z in levels]
    extra_labels = torch.cat([labels, torch.zeros(4, dtype=torch.long)])
    torch.testing.assert_close(SparseContrastiveLoss(margin=5.0)(extra, extra_labels), ref)


def test_terms_vanish_when_classes_are_tight_and_far_apart():
    centres = {1: torch.zeros(8), 2: torch.full((8,), 10.0)}
    labels = torch.tensor([1, 1, 2, 2])
    z = torch.stack([centres[int(c)] for c in labels])
    terms = SparseContrastiveLoss(margin=5.0, reduction="none")(z, labels)
    torch.testing.assert_close(terms, torch.zeros(2), atol=1e-4, rtol=0)
    # close classes are pushed: the negative term is positive
    near = torch.stack([centres[1], centres[1], centres[1] + 0.5, centres[1] + 0.5])
    assert SparseContrastiveLoss(margin=5.0, reduction="none")(near, labels)[1] > 0


def test_gradient_pulls_same_class_together_and_is_finite_for_duplicates():
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 0.0], [20.0, 20.0]], requires_grad=True)
    labels = torch.tensor([1, 1, 1, 2])
    SparseContrastiveLoss(margin=5.0)(z, labels).backward()
    assert torch.isfinite(z.grad).all()
    assert z.grad[1, 0] > 0  # gradient descent moves sample 1 towards the other class-1 samples


def test_fewer_than_two_labelled_gives_zero_with_graph():
    z = torch.randn(3, 4, requires_grad=True)
    value = SparseContrastiveLoss()(z, torch.tensor([0, 2, 0]))
    assert float(value) == 0.0
    value.backward()
    assert SparseContrastiveLoss(reduction="none")(z, torch.tensor([0, 0, 0])).shape == (2,)


def test_errors():
    with pytest.raises(ValueError, match="labels of shape"):
        SparseContrastiveLoss()([torch.randn(3, 2)], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="level_weights"):
        SparseContrastiveLoss(level_weights=[1.0])([torch.randn(3, 2)] * 2, torch.tensor([1, 2, 1]))
    with pytest.raises(ValueError, match="margin"):
        SparseContrastiveLoss(margin=0)


def test_pairwise_distances_accurate_for_large_offsets():
    x = torch.randn(6, 2048) * 0.01 + 5.0
    torch.testing.assert_close(pairwise_distances(x), torch.cdist(x.double(), x.double()).float(), atol=1e-3, rtol=1e-3)
