from __future__ import annotations

import pytest
import torch

from epsseg_monai.losses import InpaintingLoss
from epsseg_monai.utils import center_region_mask


@pytest.mark.parametrize("spatial", [(16, 16), (8, 8, 8)])
@pytest.mark.parametrize("mask_size", [1, 3])
def test_pixels_outside_mask_do_not_change_loss(spatial, mask_size):
    loss = InpaintingLoss(mask_size=mask_size)
    pred, target = torch.randn((2, 2) + spatial), torch.randn((2, 2) + spatial)
    ref = loss(pred, target)
    region = center_region_mask(spatial, mask_size).expand((2, 2) + spatial)
    pred2, target2 = pred.clone(), target.clone()
    pred2[~region] = torch.randn(int((~region).sum()))
    target2[~region] += 100.0
    torch.testing.assert_close(loss(pred2, target2), ref)
    pred2[region] += 1.0
    assert not torch.allclose(loss(pred2, target2), ref)


def test_value_and_reductions():
    pred = torch.zeros(3, 1, 5, 5)
    target = torch.zeros(3, 1, 5, 5)
    target[:, 0, 2, 2] = torch.tensor([1.0, 2.0, 3.0])
    expected = 0.5 * torch.tensor([1.0, 4.0, 9.0])
    torch.testing.assert_close(InpaintingLoss(reduction="none")(pred, target), expected)
    torch.testing.assert_close(InpaintingLoss(reduction="sum")(pred, target), expected.sum())
    torch.testing.assert_close(InpaintingLoss()(pred, target), expected.mean())
    # a 3x3 region averages over 9 voxels
    torch.testing.assert_close(InpaintingLoss(3, reduction="none")(pred, target), expected / 9)


def test_explicit_mask_and_gradient():
    pred = torch.randn(2, 1, 6, 6, requires_grad=True)
    target = torch.randn(2, 1, 6, 6)
    mask = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    mask[0, 0, 0, 0] = True
    mask[1, 0, 5, 5] = True
    value = InpaintingLoss(reduction="none")(pred, target, mask)
    torch.testing.assert_close(
        value, 0.5 * torch.stack([pred[0, 0, 0, 0] - target[0, 0, 0, 0], pred[1, 0, 5, 5] - target[1, 0, 5, 5]]) ** 2
    )
    value.sum().backward()
    assert int((pred.grad != 0).sum()) == 2


def test_errors():
    loss = InpaintingLoss()
    with pytest.raises(ValueError, match="centre crop"):
        loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))  # odd difference: no common centre
    with pytest.raises(ValueError, match="centre crop"):
        loss(torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 4, 4))  # larger than the target
    with pytest.raises(ValueError, match="centre crop"):
        loss(torch.zeros(2, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="BCH"):
        loss(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="does not match"):
        loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.ones(3, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty"):
        loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        InpaintingLoss(reduction="median")


@pytest.mark.parametrize("spatial", [2, 3])
def test_centre_crop_reconstruction_equals_whole_patch(spatial):
    """A reconstruction cropped to the centre gives the loss of the whole one; gradients reach the crop."""
    torch.manual_seed(0)
    target = torch.randn((3, 1) + (10,) * spatial)
    full = torch.randn_like(target)
    crop = (slice(None), slice(None)) + (slice(3, 7),) * spatial
    part = full[crop].clone().requires_grad_(True)
    for mask_size in (1, 3):
        loss = InpaintingLoss(mask_size=mask_size)
        torch.testing.assert_close(loss(part, target), loss(full, target))
    mask = torch.zeros((3, 1) + (10,) * spatial, dtype=torch.bool)
    mask[(0, 0) + (5,) * spatial] = True
    mask[(slice(1, 3), 0) + (slice(4, 6),) * spatial] = True
    value = InpaintingLoss(reduction="none")(part, target, mask)
    torch.testing.assert_close(value, InpaintingLoss(reduction="none")(full, target, mask))
    value.sum().backward()
    assert int((part.grad != 0).sum()) == 1 + 2 * 2**spatial


def test_mask_outside_the_cropped_reconstruction_is_an_error():
    target = torch.zeros(1, 1, 10, 10)
    with pytest.raises(ValueError, match="reconstruct_center"):
        InpaintingLoss(mask_size=6)(torch.zeros(1, 1, 4, 4), target)
    mask = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    mask[0, 0, 0, 0] = True
    with pytest.raises(ValueError, match="reconstruct_center"):
        InpaintingLoss()(torch.zeros(1, 1, 4, 4), target, mask)
