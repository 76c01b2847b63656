from __future__ import annotations

import pytest
import torch

from epsseg_monai.losses import GMMKLDivergenceLoss
from epsseg_monai.networks import GMMPrior


def ladder(batch=4, z=8, classes=4, spatial_dims=2):
    shapes = [(batch, z) + (s,) * spatial_dims for s in (8, 4, 2)]
    mu = [torch.randn(s) for s in shapes]
    logvar = [torch.randn(s) * 0.1 for s in shapes]
    means, logvars = GMMPrior(classes, z)()
    prior_mu = [torch.randn(s) for s in shapes[:-1]] + [means]
    prior_logvar = [torch.randn(s) * 0.1 for s in shapes[:-1]] + [logvars]
    return mu, logvar, prior_mu, prior_logvar


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_zero_when_posterior_equals_prior(spatial_dims):
    mu, logvar, prior_mu, prior_logvar = ladder(spatial_dims=spatial_dims)
    labels = torch.tensor([1, 2, 4, 0])
    mu[:2], logvar[:2] = prior_mu[:2], prior_logvar[:2]
    comp = prior_mu[-1][labels.clamp(min=1) - 1]
    mu[-1] = comp.reshape(4, 8, *([1] * spatial_dims)).expand_as(mu[-1]).clone()
    mu[-1][3] += 3.0  # the unlabelled sample is far from every component, and ignored
    logvar[-1] = torch.zeros_like(mu[-1])
    per_level = GMMKLDivergenceLoss(reduction="none")(mu, logvar, prior_mu, prior_logvar, labels)
    torch.testing.assert_close(per_level, torch.zeros(3))


def test_unlabelled_samples_do_not_change_top_term_and_reductions():
    mu, logvar, prior_mu, prior_logvar = ladder()
    labels = torch.tensor([1, 3, 0, 0])
    loss = GMMKLDivergenceLoss(reduction="none")
    ref = loss(mu, logvar, prior_mu, prior_logvar, labels)
    mu[-1][2:] += 7.0
    changed = loss(mu, logvar, prior_mu, prior_logvar, labels)
    torch.testing.assert_close(changed[-1], ref[-1])
    assert torch.all(ref >= 0)
    torch.testing.assert_close(GMMKLDivergenceLoss()(mu, logvar, prior_mu, prior_logvar, labels), changed.mean())
    torch.testing.assert_close(
        GMMKLDivergenceLoss(reduction="sum")(mu, logvar, prior_mu, prior_logvar, labels), changed.sum()
    )


def test_top_term_uses_the_class_component():
    mu, logvar, prior_mu, prior_logvar = ladder(batch=1)
    mu[-1] = prior_mu[-1][1].reshape(1, 8, 1, 1).expand(1, 8, 2, 2).clone()
    logvar[-1] = torch.zeros_like(mu[-1])
    loss = GMMKLDivergenceLoss(reduction="none")
    assert float(loss(mu, logvar, prior_mu, prior_logvar, torch.tensor([2]))[-1]) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(mu, logvar, prior_mu, prior_logvar, torch.tensor([1]))[-1]) > 1.0


def test_no_labelled_sample_gives_zero_top_term():
    mu, logvar, prior_mu, prior_logvar = ladder()
    mu[-1].requires_grad_(True)
    per_level = GMMKLDivergenceLoss(reduction="none")(
        mu, logvar, prior_mu, prior_logvar, torch.zeros(4, dtype=torch.long)
    )
    assert float(per_level[-1]) == 0.0
    per_level.sum().backward()


def test_errors():
    mu, logvar, prior_mu, prior_logvar = ladder()
    loss = GMMKLDivergenceLoss()
    labels = torch.tensor([1, 2, 3, 4])
    with pytest.raises(ValueError, match="one entry per level"):
        loss(mu[:2], logvar, prior_mu, prior_logvar, labels)
    with pytest.raises(ValueError, match="labels must be in"):
        loss(mu, logvar, prior_mu, prior_logvar, torch.tensor([1, 2, 3, 5]))
    with pytest.raises(ValueError, match="labels must have shape"):
        loss(mu, logvar, prior_mu, prior_logvar, labels[:3])
    with pytest.raises(ValueError, match="GMM parameters"):
        loss(mu, logvar, prior_mu[:2] + [prior_mu[-1][:, :4]], prior_logvar, labels)
    with pytest.raises(ValueError, match="prior shapes"):
        loss(mu, logvar, [prior_mu[0][:, :4]] + prior_mu[1:], prior_logvar, labels)
