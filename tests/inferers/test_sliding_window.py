"""Tests of ``epsseg_monai.inferers.sliding_window``: MONAI's sliding-window inference over the valid pass gives
exactly ``DenseInferer``'s result."""

from __future__ import annotations

import pytest
import torch

from epsseg_monai.inferers import DenseInferer, DenseSlidingWindowInferer
from tests.inferers.test_dense import images, network


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("fine", [(), (0, 1)], ids=["paper-head", "fine-head"])
def test_equals_dense_inferer(spatial_dims: int, fine: tuple[int, ...]) -> None:
    net = network(spatial_dims, head_fine_levels=fine)
    halo = net.dense_receptive_field()
    spatial = (3 * halo + 7, 2 * halo + 5) if spatial_dims == 2 else (2 * halo + 3, 2 * halo + 1, halo + 4)
    x = images(spatial)
    expected = DenseInferer().logits(x, net)
    roi = 2 * halo + 9  # several windows per axis, with a last window aligned to the image end
    got = DenseSlidingWindowInferer(roi_size=roi, sw_batch_size=3).logits(x, net)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    assert expected.std() > 0.05
    probs = DenseSlidingWindowInferer(roi_size=roi)(x, net)
    assert torch.allclose(probs.sum(1), torch.ones(()), atol=1e-5)


def test_with_exported_predictor() -> None:
    """A traced valid-pass predictor (what ``epsseg_monai.export`` writes) in MONAI's sliding window."""
    net = network(2, head_fine_levels=(0,))
    predictor = net.dense_predictor(pad_mode=None)
    halo = predictor.receptive_field
    x = images((3 * halo, 2 * halo + 3), batch=1)
    traced = torch.jit.trace(predictor, x, check_trace=False)
    inferer = DenseSlidingWindowInferer(roi_size=2 * halo + 11, pads=predictor.pads, receptive_field=halo)
    got = inferer.logits(x, traced)
    expected = DenseInferer().logits(x, net)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.allclose(DenseSlidingWindowInferer(roi_size=2 * halo + 11).logits(x, predictor), expected, atol=1e-4)


def test_window_too_small_is_refused() -> None:
    net = network(2)
    halo = net.dense_receptive_field()
    x = images((4 * halo, 4 * halo), batch=1)
    with pytest.raises(ValueError, match="exceed twice the receptive field"):
        DenseSlidingWindowInferer(roi_size=2 * halo).logits(x, net)
    with pytest.raises(ValueError, match="pad_mode=None"):
        DenseSlidingWindowInferer(roi_size=3 * halo).logits(x, net.dense_predictor())
    with pytest.raises(TypeError, match="dense geometry"):
        DenseSlidingWindowInferer(roi_size=3 * halo).logits(x, torch.nn.Identity())
    with pytest.raises(ValueError, match="both pads and receptive_field"):
        DenseSlidingWindowInferer(roi_size=3 * halo, receptive_field=5)
