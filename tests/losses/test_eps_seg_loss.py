from __future__ import annotations

import pytest
import torch

from epsseg_monai.losses import (
    EpsSegLoss,
    GMMKLDivergenceLoss,
    InpaintingLoss,
    SparseContrastiveLoss,
    sparse_cross_entropy,
)
from epsseg_monai.networks import EpsSegHVAE


def outputs_and_data(batch=6, spatial_dims=2):
    net = EpsSegHVAE(spatial_dims, 1, 3, num_filters=8, num_blocks=1, latent_channels=6, patch_size=16, head_window=2)
    x = torch.randn((batch, 1) + (16,) * spatial_dims)
    return net, net(x), x


def test_unlabelled_samples_do_not_change_ce():
    logits = torch.randn(4, 3)
    labels = torch.tensor([1, 3, 2, 1])
    ref = sparse_cross_entropy(logits, labels)
    more = torch.cat([logits, 10 * torch.randn(3, 3)])
    torch.testing.assert_close(sparse_cross_entropy(more, torch.cat([labels, torch.zeros(3, dtype=torch.long)])), ref)
    torch.testing.assert_close(ref, torch.nn.functional.cross_entropy(logits, labels - 1))


def test_ce_edge_cases_and_weights():
    logits = torch.randn(3, 2, requires_grad=True)
    zero = sparse_cross_entropy(logits, torch.zeros(3, dtype=torch.long))
    assert float(zero) == 0.0
    zero.backward()
    w = torch.tensor([1.0, 3.0])
    labels = torch.tensor([1, 2, 0])
    torch.testing.assert_close(
        sparse_cross_entropy(logits, labels, weight=w),
        torch.nn.functional.cross_entropy(logits[:2], labels[:2] - 1, weight=w),
    )
    with pytest.raises(ValueError, match="labels must be in"):
        sparse_cross_entropy(logits, torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_total_is_the_weighted_sum_of_terms(spatial_dims):
    _, out, x = outputs_and_data(spatial_dims=spatial_dims)
    labels = torch.tensor([1, 2, 3, 0, 1, 2])
    loss = EpsSegLoss(alpha=1.0, beta=0.1, gamma=0.3, ce_weight=2.0, margin=10.0)
    terms = loss(out, x, labels)
    assert set(terms) == {"loss", "inpainting", "kl", "contrastive", "ce"}
    torch.testing.assert_close(terms["inpainting"], InpaintingLoss()(out["reconstruction"], x))
    torch.testing.assert_close(
        terms["kl"], GMMKLDivergenceLoss()(out["mu"], out["logvar"], out["prior_mu"], out["prior_logvar"], labels)
    )
    torch.testing.assert_close(terms["contrastive"], SparseContrastiveLoss(margin=10.0)(out["mu"], labels))
    torch.testing.assert_close(terms["ce"], sparse_cross_entropy(out["logits"], labels))
    expected = terms["inpainting"] + 0.1 * terms["kl"] + 0.3 * terms["contrastive"] + 2.0 * terms["ce"]
    torch.testing.assert_close(terms["loss"], expected)


def test_all_unlabelled_batch_is_finite_and_trains_the_vae():
    net, out, x = outputs_and_data()
    terms = EpsSegLoss()(out, x, torch.zeros(6, dtype=torch.long))
    assert all(torch.isfinite(v) for v in terms.values())
    assert float(terms["ce"]) == 0.0 and float(terms["contrastive"]) == 0.0
    terms["loss"].backward()
    assert net.decoder_out[-1].weight.grad.abs().sum() > 0


def test_errors():
    _, out, x = outputs_and_data()
    with pytest.raises(ValueError, match="lacks"):
        EpsSegLoss()({"logits": out["logits"]}, x, torch.ones(6, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        EpsSegLoss(reduction="none")
    with pytest.raises(ValueError, match="labels must be in"):
        EpsSegLoss()(out, x, torch.full((6,), 4))
