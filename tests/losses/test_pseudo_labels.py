"""Tests of the pseudo-labels of ε-Seg's semi-supervised phase and of ``SemiSupervisedEpsSegLoss``."""

from __future__ import annotations

import pytest
import torch

from epsseg_monai.losses import (
    EpsSegLoss,
    EpsSegTrainerLoss,
    PseudoLabeller,
    SemiSupervisedEpsSegLoss,
    class_mean_pseudo_labels,
)
from epsseg_monai.networks import EpsSegHVAE


def clustered(spatial=(2, 2), channels=3, seed=0):
    """Anchors of classes 1 and 3 around two centres; neighbours near one centre or the other; labels 0."""
    g = torch.Generator().manual_seed(seed)
    centres = {1: torch.zeros(channels, *spatial), 3: torch.full((channels, *spatial), 4.0)}
    anchors = [1, 1, 3, 3]
    truth = [3, 1, 1, 3, 3]  # the class each neighbour was drawn near
    latents = [centres[c] + 0.3 * torch.randn(channels, *spatial, generator=g) for c in anchors + truth]
    labels = torch.tensor(anchors + [0] * len(truth))
    return torch.stack(latents), labels, torch.tensor(anchors + truth)


def brute_force_probs(latents, labels, temperature):
    x = latents.flatten(1).double()
    classes = sorted(set(labels[labels > 0].tolist()))
    means = torch.stack([x[labels == c].mean(0) for c in classes])
    d2 = torch.stack([((x - m) ** 2).sum(1) for m in means], dim=1)
    return classes, torch.softmax(-d2 / temperature, dim=1)


@pytest.mark.parametrize("spatial", [(2, 2), (2, 2, 2)], ids=["2d", "3d"])
def test_pseudo_labels_are_the_nearest_class_mean(spatial):
    latents, labels, truth = clustered(spatial)
    pseudo, confidence = class_mean_pseudo_labels(latents, labels, threshold=0.5, temperature=1.0)
    assert pseudo.dtype == torch.long
    torch.testing.assert_close(pseudo, truth)
    classes, probs = brute_force_probs(latents, labels, 1.0)
    torch.testing.assert_close(confidence, probs.max(1).values.float())
    assert set(pseudo.tolist()) == {1, 3}, "absent class 2 is never a candidate"


def test_threshold_filters_and_anchors_keep_their_labels():
    latents, labels, _ = clustered()
    temperature = 200.0  # the ε-Seg value: here the probabilities are soft
    classes, probs = brute_force_probs(latents, labels, temperature)
    best = probs.argmax(1)
    all_accepted, confidence = class_mean_pseudo_labels(latents, labels, threshold=0.0, temperature=temperature)
    torch.testing.assert_close(confidence, probs.max(1).values.float())
    neighbours = labels == 0
    threshold = float(confidence[neighbours].median())
    pseudo, _ = class_mean_pseudo_labels(latents, labels, threshold=threshold, temperature=temperature)
    accepted = neighbours & (confidence >= threshold)
    assert 0 < int(accepted.sum()) < int(neighbours.sum())
    expected = labels.clone()
    expected[accepted] = torch.tensor(classes)[best[accepted]]
    torch.testing.assert_close(pseudo, expected)
    torch.testing.assert_close(all_accepted[neighbours], torch.tensor(classes)[best[neighbours]])
    # the threshold itself is accepted (>=), one just above it is not
    at_threshold = int(torch.nonzero(neighbours & (confidence == threshold))[0])
    above, _ = class_mean_pseudo_labels(latents, labels, threshold=threshold + 1e-6, temperature=temperature)
    assert pseudo[at_threshold] != 0 and above[at_threshold] == 0
    # anchors keep their true labels even when they sit at the other class's mean
    latents[0] = latents[2]
    pseudo, _ = class_mean_pseudo_labels(latents, labels, threshold=0.0, temperature=1.0)
    assert pseudo[:4].tolist() == [1, 1, 3, 3]


def test_no_gradient_through_pseudo_labels():
    latents, labels, _ = clustered()
    latents.requires_grad_(True)
    pseudo, confidence = class_mean_pseudo_labels(latents * 2, labels, threshold=0.0, temperature=1.0)
    assert not pseudo.requires_grad and not confidence.requires_grad
    assert latents.grad is None


def test_fewer_than_two_classes_gives_no_pseudo_labels():
    latents, labels, _ = clustered()
    labels[2:4] = 1  # only class 1 among the anchors: nothing to compare with
    pseudo, confidence = class_mean_pseudo_labels(latents, labels, threshold=0.0)
    torch.testing.assert_close(pseudo, labels)
    assert (confidence == 0).all()
    none, _ = class_mean_pseudo_labels(latents, torch.zeros_like(labels), threshold=0.0)
    assert (none == 0).all()


def test_bad_inputs():
    latents, labels, _ = clustered()
    with pytest.raises(ValueError, match="labels"):
        class_mean_pseudo_labels(latents, labels[:-1])
    with pytest.raises(ValueError, match="temperature"):
        class_mean_pseudo_labels(latents, labels, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        PseudoLabeller(temperature=-1.0)


def test_pseudo_labeller_fraction_and_threshold():
    latents, labels, truth = clustered()
    labeller = PseudoLabeller(threshold=0.5, temperature=1.0)
    torch.testing.assert_close(labeller(latents, labels), truth)
    assert labeller.fraction == 1.0
    labeller.threshold = 1.01  # nothing is that confident
    torch.testing.assert_close(labeller(latents, labels), labels)
    assert labeller.fraction == 0.0
    labeller(latents[:4], labels[:4])  # no unlabelled sample at all
    assert labeller.fraction == 0.0


# ------------------------------------------------------------------ SemiSupervisedEpsSegLoss
KWARGS = {"alpha": 1.0, "beta": 0.1, "gamma": 0.3, "ce_weight": 2.0, "mask_size": 3, "margin": 10.0}


@pytest.fixture
def net_outputs():
    net = EpsSegHVAE(
        2, 1, 3, num_levels=2, num_filters=8, num_blocks=1, latent_channels=4, patch_size=16, head_window=2
    )
    x = torch.randn(8, 1, 16, 16)
    labels = torch.tensor([1, 0, 0, 0, 2, 0, 0, 0])  # two anchors with three neighbours each
    return net, net(x), x, labels


def test_semi_supervised_loss_uses_the_pseudo_labels(net_outputs):
    net, out, x, labels = net_outputs
    loss = SemiSupervisedEpsSegLoss(pseudo_threshold=0.0, **KWARGS)
    total = loss(out, {"target": x, "label": labels[:, None]})
    expected_labels, _ = class_mean_pseudo_labels(out["mu"][-1], labels, threshold=0.0, temperature=200.0)
    assert (expected_labels > 0).all(), "threshold 0: every neighbour gets the nearest anchor class"
    expected = EpsSegLoss(**KWARGS)(out, x, expected_labels)
    torch.testing.assert_close(total, expected["loss"])
    for name in ("inpainting", "kl", "contrastive", "ce"):
        torch.testing.assert_close(loss.terms[name], expected[name].detach())
    assert float(loss.terms["pseudo_fraction"]) == 1.0
    # pseudo-labelled neighbours change the label-dependent terms, not the inpainting one
    supervised = EpsSegTrainerLoss(**KWARGS)
    supervised(out, {"target": x, "label": labels})
    torch.testing.assert_close(loss.terms["inpainting"], supervised.terms["inpainting"])
    for name in ("kl", "contrastive", "ce"):
        assert not torch.allclose(loss.terms[name], supervised.terms[name]), name
    total.backward()
    assert all(p.grad is not None for p in net.head.parameters())


def test_semi_supervised_loss_without_accepted_pseudo_labels_is_the_supervised_loss(net_outputs):
    _, out, x, labels = net_outputs
    loss = SemiSupervisedEpsSegLoss(pseudo_threshold=1.01, **KWARGS)
    total = loss(out, {"target": x, "label": labels})
    supervised = EpsSegTrainerLoss(**KWARGS)
    torch.testing.assert_close(total, supervised(out, {"target": x, "label": labels}))
    assert float(loss.terms["pseudo_fraction"]) == 0.0
    loss.threshold = 0.25
    assert loss.pseudo_labeller.threshold == 0.25
    with pytest.raises(ValueError, match="targets lacks"):
        loss(out, {"target": x})
