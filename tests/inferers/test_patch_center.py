"""Tests of ``epsseg_monai.inferers.PatchCenterInferer``: one network pass per pixel on the patch centred on it."""

from __future__ import annotations

import pytest
import torch

from epsseg_monai.inferers import PatchCenterInferer
from epsseg_monai.networks import EpsSegHVAE
from epsseg_monai.transforms import extract_patch

#: (spatial dims, patch size, head window, image spatial shape): tiny networks, images smaller than a patch.
CASES = {2: (16, 4, (12, 13)), 3: (8, 2, (6, 7, 5))}


def network(spatial_dims: int) -> EpsSegHVAE:
    patch, window, _ = CASES[spatial_dims]
    torch.manual_seed(0)
    net = EpsSegHVAE(
        spatial_dims,
        1,
        3,
        num_levels=2,
        num_filters=8,
        num_blocks=1,
        latent_channels=4,
        patch_size=patch,
        head_window=window,
    )
    return net.eval()


def images(spatial_dims: int, batch: int = 2) -> torch.Tensor:
    spatial = CASES[spatial_dims][2]
    return torch.randn((batch, 1, *spatial), generator=torch.Generator().manual_seed(spatial_dims))


def reference(net: EpsSegHVAE, img: torch.Tensor, patch: int) -> torch.Tensor:
    """Class probabilities ``(K, *spatial)`` of one channel-first image, one pixel at a time."""
    spatial = tuple(img.shape[1:])
    out = torch.zeros((3, *spatial))
    with torch.no_grad():
        for c in torch.cartesian_prod(*[torch.arange(s) for s in spatial]).reshape(-1, len(spatial)).tolist():
            p = extract_patch(img, c, (patch,) * len(spatial))
            out[(slice(None), *c)] = torch.softmax(net(p[None]), dim=1)[0]
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def setup(request: pytest.FixtureRequest) -> tuple[EpsSegHVAE, torch.Tensor, torch.Tensor, int]:
    """Network, images, their per-pixel reference probabilities, patch size (computed once per module)."""
    dims = request.param
    net, imgs, patch = network(dims), images(dims), CASES[dims][0]
    expected = torch.stack([reference(net, img, patch) for img in imgs])
    return net, imgs, expected, patch


def test_every_pixel_matches_the_centred_patch(setup) -> None:
    net, imgs, expected, patch = setup
    with torch.no_grad():
        probs = PatchCenterInferer(patch, batch_size=64)(imgs, net)
    assert probs.shape == (imgs.shape[0], 3, *imgs.shape[2:]) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, expected, rtol=1e-4, atol=1e-5)
    # border pixels are included, and the pixels differ from one another (the test could not pass by accident)
    assert (probs.sum(1) > 0).all()
    flat = probs.reshape(probs.shape[0], 3, -1)
    assert (flat.max(-1).values - flat.min(-1).values > 1e-4).any()


def test_probabilities_sum_to_one(setup) -> None:
    net, imgs, _, patch = setup
    with torch.no_grad():
        probs = PatchCenterInferer(patch, batch_size=50)(imgs, net)
    torch.testing.assert_close(probs.sum(1), torch.ones_like(probs[:, 0]))
    assert (probs >= 0).all()


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_independent_of_batch_size(setup, batch_size: int) -> None:
    net, imgs, expected, patch = setup
    with torch.no_grad():
        probs = PatchCenterInferer(patch, batch_size=batch_size)(imgs[:1], net)
    torch.testing.assert_close(probs, expected[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channel_axis", [True, False])
def test_mask_limits_predictions(setup, channel_axis: bool) -> None:
    net, imgs, expected, patch = setup
    g = torch.Generator().manual_seed(1)
    mask = torch.rand((imgs.shape[0], *imgs.shape[2:]), generator=g) < 0.2
    mask.view(imgs.shape[0], -1)[:, 0] = True  # a corner pixel too
    with torch.no_grad():
        probs = PatchCenterInferer(patch, batch_size=16)(imgs, net, mask=mask[:, None] if channel_axis else mask)
    predicted = probs.sum(1) > 0
    assert torch.equal(predicted, mask)
    assert (probs.permute(1, 0, *range(2, probs.ndim))[:, ~mask] == 0).all()
    torch.testing.assert_close(probs[mask[:, None].expand_as(probs)], expected[mask[:, None].expand_as(expected)])


def test_empty_mask(setup) -> None:
    net, imgs, expected, patch = setup
    mask = torch.zeros((imgs.shape[0], *imgs.shape[2:]), dtype=torch.bool)
    with torch.no_grad():
        none = PatchCenterInferer(patch)(imgs, net, mask=mask)
    assert none.shape == expected.shape and (none == 0).all()
    # nothing in the first image, one pixel in the second: the class count comes from the network
    mask[1].view(-1)[5] = True
    with torch.no_grad():
        one = PatchCenterInferer(patch)(imgs, net, mask=mask)
    assert one.shape == expected.shape
    assert (one[0] == 0).all() and int((one[1].sum(0) > 0).sum()) == 1
    torch.testing.assert_close(one[1].reshape(3, -1)[:, 5], expected[1].reshape(3, -1)[:, 5])


def test_mask_shape_is_checked(setup) -> None:
    net, imgs, _, patch = setup
    bad = torch.ones((imgs.shape[0], *[s + 1 for s in imgs.shape[2:]]), dtype=torch.bool)
    with pytest.raises(ValueError, match="mask shape"):
        PatchCenterInferer(patch)(imgs, net, mask=bad)


def test_num_pixels_subset(setup) -> None:
    net, imgs, expected, patch = setup
    with torch.no_grad():
        probs = PatchCenterInferer(patch, num_pixels=9, seed=3)(imgs, net)
        again = PatchCenterInferer(patch, num_pixels=9, seed=3)(imgs, net)
        other = PatchCenterInferer(patch, num_pixels=9, seed=4)(imgs, net)
    predicted = probs.sum(1) > 0
    assert predicted.reshape(imgs.shape[0], -1).sum(1).tolist() == [9] * imgs.shape[0]
    assert torch.equal(probs, again)
    assert not torch.equal(predicted, other.sum(1) > 0)
    assert not torch.equal(predicted[0], predicted[1])  # each image gets its own subset
    sel = predicted[:, None].expand_as(probs)
    torch.testing.assert_close(probs[sel], expected[sel], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probs.sum(1)[predicted], torch.ones(int(predicted.sum())))


def test_num_pixels_at_least_the_image_predicts_all(setup) -> None:
    net, imgs, expected, patch = setup
    total = imgs[0, 0].numel()
    with torch.no_grad():
        probs = PatchCenterInferer(patch, num_pixels=total)(imgs[:1], net)
    assert (probs.sum(1) > 0).all()


def test_predict_points(setup) -> None:
    net, imgs, expected, patch = setup
    dims = imgs.ndim - 2
    coords = torch.tensor([[0] * dims, [s - 1 for s in imgs.shape[2:]], [1] * dims])
    with torch.no_grad():
        probs = PatchCenterInferer(patch, batch_size=2).predict_points(imgs[0], net, coords)
    assert probs.shape == (3, 3)
    for row, c in zip(probs, coords.tolist()):
        torch.testing.assert_close(row, expected[(0, slice(None), *c)], rtol=1e-4, atol=1e-5)


def test_training_mode_network_is_refused() -> None:
    net = network(2).train()
    with pytest.raises(ValueError, match="eval mode"):
        PatchCenterInferer(16, batch_size=4)(images(2, batch=1)[..., :4, :4], net)


def test_bad_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        PatchCenterInferer(16, batch_size=0)


def test_amp_bfloat16_close_to_float32_and_auto_follows_the_device(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    import epsseg_monai.utils as utils

    net, imgs, expected, patch = setup
    with torch.no_grad():
        bf16 = PatchCenterInferer(patch, batch_size=64, amp=True)(imgs, net)
    assert bf16.dtype == torch.float32
    assert (bf16 - expected).abs().max() > 1e-5  # computed in another precision
    torch.testing.assert_close(bf16, expected, rtol=0, atol=0.05)
    torch.testing.assert_close(bf16.sum(1), torch.ones_like(bf16[:, 0]))
    for fast, want in ((True, bf16), (False, expected)):
        monkeypatch.setattr(utils, "fast_bfloat16", lambda device, fast=fast: fast)
        with torch.no_grad():
            auto = PatchCenterInferer(patch, batch_size=64, amp="auto")(imgs, net)
        torch.testing.assert_close(auto, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="amp"):
        PatchCenterInferer(patch, amp="bf16")
