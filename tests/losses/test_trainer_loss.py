"""Tests of ``epsseg_monai.losses.EpsSegTrainerLoss``: ``EpsSegLoss`` behind ``SupervisedTrainer``'s interface."""

from __future__ import annotations

import pytest
import torch

from epsseg_monai.losses import EpsSegLoss, EpsSegTrainerLoss
from epsseg_monai.networks import EpsSegHVAE
from epsseg_monai.utils import center_region_mask

KWARGS = {"alpha": 1.0, "beta": 0.1, "gamma": 0.3, "ce_weight": 2.0, "mask_size": 3, "margin": 10.0}


def outputs_and_data(spatial_dims: int = 2, batch: int = 6):
    net = EpsSegHVAE(
        spatial_dims, 1, 3, num_levels=2, num_filters=8, num_blocks=1, latent_channels=4, patch_size=16, head_window=2
    )
    x = torch.randn((batch, 1) + (16,) * spatial_dims)
    return net(x), x


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("with_mask", [True, False])
def test_total_equals_eps_seg_loss(spatial_dims: int, with_mask: bool) -> None:
    out, x = outputs_and_data(spatial_dims)
    labels = torch.tensor([1, 2, 3, 0, 1, 2])
    mask = center_region_mask((16,) * spatial_dims, 5)[None, None].expand(6, 1, *(16,) * spatial_dims)
    targets = {"target": x, "label": labels[:, None]}  # (B, 1) like a collated batch
    if with_mask:
        targets["mask"] = mask
    loss = EpsSegTrainerLoss(**KWARGS)
    total = loss(out, targets)
    expected = EpsSegLoss(**KWARGS)(out, x, labels, mask if with_mask else None)
    assert total.ndim == 0
    torch.testing.assert_close(total, expected["loss"])
    assert set(loss.terms) == set(expected)
    for name, value in loss.terms.items():
        assert not value.requires_grad
        torch.testing.assert_close(value, expected[name].detach())
    assert total.requires_grad
    total.backward()


def test_mask_changes_the_inpainting_term() -> None:
    """The optional mask is passed on (so the equality test above is not blind to it)."""
    out, x = outputs_and_data()
    labels = torch.tensor([1, 2, 3, 0, 1, 2])
    loss = EpsSegTrainerLoss(mask_size=1)
    loss(out, {"target": x, "label": labels})
    default = loss.terms["inpainting"]
    big = center_region_mask((16, 16), 9)[None, None]
    loss(out, {"target": x, "label": labels, "mask": big})
    assert not torch.allclose(loss.terms["inpainting"], default)


def test_terms_are_from_the_last_call() -> None:
    out, x = outputs_and_data()
    loss = EpsSegTrainerLoss()
    loss(out, {"target": x, "label": torch.tensor([1, 1, 1, 1, 1, 1])})
    first = dict(loss.terms)
    loss(out, {"target": x, "label": torch.tensor([3, 3, 3, 3, 3, 3])})
    assert not torch.equal(loss.terms["ce"], first["ce"])


@pytest.mark.parametrize("missing", ["target", "label"])
def test_missing_target_keys(missing: str) -> None:
    out, x = outputs_and_data()
    targets = {"target": x, "label": torch.ones(6, dtype=torch.long)}
    del targets[missing]
    loss = EpsSegTrainerLoss()
    with pytest.raises(ValueError, match=f"targets lacks \\['{missing}'\\]"):
        loss(out, targets)
    assert not hasattr(loss, "terms") or loss.terms is None


def test_eval_mode_output_is_refused() -> None:
    net = EpsSegHVAE(
        2, 1, 3, num_levels=2, num_filters=8, num_blocks=1, latent_channels=4, patch_size=16, head_window=2
    ).eval()
    x = torch.randn(2, 1, 16, 16)
    with pytest.raises(ValueError, match="outputs lacks"):
        EpsSegTrainerLoss()({"logits": net(x)}, {"target": x, "label": torch.ones(2, dtype=torch.long)})
