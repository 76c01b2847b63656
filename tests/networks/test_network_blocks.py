from __future__ import annotations

import pytest
import torch
from torch import nn

from epsseg_monai.networks import BlurPool, GatedResidualBlock, GMMPrior, SegmentationHead, gaussian_kl
from epsseg_monai.networks.blocks import receptive_field_radius


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_blur_pool_halves_and_preserves_constants(spatial_dims):
    pool = BlurPool(spatial_dims, channels=3)
    x = torch.full((1, 3) + (8,) * spatial_dims, 2.0)
    y = pool(x)
    assert y.shape == (1, 3) + (4,) * spatial_dims
    # away from the zero-padded border a constant stays constant (the kernel sums to 1)
    assert torch.allclose(y[(slice(None), slice(None)) + (slice(1, None),) * spatial_dims], torch.tensor(2.0))


def test_blur_pool_equals_blur_then_subsample():
    pool = BlurPool(2, channels=1)
    x = torch.randn(1, 1, 10, 10)
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3)
    full = torch.nn.functional.conv2d(x, kernel, padding=1)
    torch.testing.assert_close(pool(x), full[:, :, ::2, ::2])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gated_residual_block_shape_and_gate(spatial_dims):
    block = GatedResidualBlock(spatial_dims, 4, dropout=0.2).eval()
    x = torch.randn((2, 4) + (6,) * spatial_dims)
    assert block(x).shape == x.shape
    # a gate fully closed (sigmoid -> 0) makes the block the identity
    gate = block.block[-1].conv
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias[:4].zero_()
        gate.bias[4:].fill_(-1e4)
    torch.testing.assert_close(block(x), x)


def test_gmm_prior_means_layout_and_kl_zero_on_component():
    prior = GMMPrior(num_classes=4, latent_channels=32, mu_init=5.0)
    means, logvars = prior()
    assert means.shape == logvars.shape == (4, 32)
    for k in range(4):
        assert torch.all(means[k, 8 * k : 8 * (k + 1)] == 5.0)
        assert means[k].sum() == 5.0 * 8
    assert torch.all(logvars == 0)
    assert not any(p.requires_grad for p in prior.parameters())
    labels = torch.tensor([1, 3, 4])
    mu = means[labels - 1][:, :, None, None].expand(3, 32, 5, 5).clone()
    logvar = torch.zeros_like(mu)
    torch.testing.assert_close(prior.kl(mu, logvar, labels), torch.zeros(3))
    # against another component the KL is 0.5 * |m_a - m_b|^2 / Z per element on average
    other = prior.kl(mu, logvar, torch.tensor([2, 1, 1]))
    torch.testing.assert_close(other, torch.full((3,), 0.5 * (2 * 8 * 25) / 32))


def test_gmm_prior_learnable_and_errors():
    prior = GMMPrior(3, 6, learnable=True)
    assert {n for n, p in prior.named_parameters()} == {"means", "logvars"}
    with pytest.raises(ValueError, match="latent_channels"):
        GMMPrior(5, 4)
    with pytest.raises(ValueError, match="class ids 1..3"):
        prior.kl(torch.zeros(2, 6, 2, 2), torch.zeros(2, 6, 2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="BZ"):
        prior.kl(torch.zeros(2, 5, 2, 2), torch.zeros(2, 5, 2, 2), torch.tensor([1, 1]))


def test_gaussian_kl_matches_torch_distributions():
    mu_q, lv_q, mu_p, lv_p = (torch.randn(10) for _ in range(4))
    q = torch.distributions.Normal(mu_q, (0.5 * lv_q).exp())
    p = torch.distributions.Normal(mu_p, (0.5 * lv_p).exp())
    torch.testing.assert_close(gaussian_kl(mu_q, lv_q, mu_p, lv_p), torch.distributions.kl_divergence(q, p))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_segmentation_head_reads_only_centre_window(spatial_dims):
    head = SegmentationHead(spatial_dims, in_channels=4, num_classes=3, window=2)
    mu = torch.randn((2, 4) + (6,) * spatial_dims)
    logits = head(mu)
    assert logits.shape == (2, 3)
    changed = mu.clone()
    changed[(slice(None), slice(None)) + (slice(0, 2),) * spatial_dims] += 10.0  # outside the centre [2, 4)
    torch.testing.assert_close(head(changed), logits)
    changed[(slice(None), slice(None)) + (slice(2, 4),) * spatial_dims] += 1.0
    assert not torch.allclose(head(changed), logits)


def test_segmentation_head_dense_matches_patchwise():
    head = SegmentationHead(2, in_channels=4, num_classes=3, window=4)
    mu = torch.randn(1, 4, 9, 9)
    dense = head.forward_dense(mu)
    assert dense.shape == (1, 3, 6, 6)
    # window starting at (i, j) is the head's centre crop of mu[i:i+4, j:j+4]
    torch.testing.assert_close(dense[:, :, 1, 3], head(mu[:, :, 1:5, 3:7]))


def test_segmentation_head_errors():
    head = SegmentationHead(2, 4, 3, window=4)
    with pytest.raises(ValueError, match="smaller than"):
        head(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="spatial dims"):
        head(torch.randn(1, 4, 8, 8, 8))


def test_receptive_field_radius_of_a_hand_built_stack() -> None:
    stack = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),  # 1
        nn.ReLU(),
        nn.Conv2d(2, 2, 5, dilation=2, padding=4),  # 4
        nn.Sequential(nn.Conv2d(2, 2, (3, 7), padding=(1, 3)), nn.Identity()),  # max(1, 3) = 3
        BlurPool(2, 2, stride=1),  # 1
        nn.Conv2d(2, 2, 1),  # 0
        nn.Linear(4, 4),  # not a convolution
    )
    assert receptive_field_radius(stack) == 9
    assert receptive_field_radius(nn.Conv3d(1, 1, 3, dilation=(1, 3, 2))) == 3
    assert receptive_field_radius(nn.Sequential(nn.ReLU(), nn.Linear(2, 2))) == 0


def test_receptive_field_radius_is_the_true_extent() -> None:
    """A single non-zero input pixel spreads exactly ``radius`` pixels through a stack of positive convolutions."""
    stack = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 5, dilation=3, padding=6), nn.Conv2d(2, 1, 3, padding=1)
    )
    with torch.no_grad():
        for m in stack:
            m.weight.fill_(1.0)
            m.bias.zero_()
        x = torch.zeros((1, 1, 41, 41))
        x[0, 0, 20, 20] = 1.0
        rows, cols = torch.nonzero(stack(x)[0].sum(0)).T
    radius = receptive_field_radius(stack)
    assert radius == 8
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20 - radius, 20 + radius, 20 - radius, 20 + radius)
