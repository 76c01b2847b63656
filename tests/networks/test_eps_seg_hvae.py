from __future__ import annotations

import pytest
import torch

from epsseg_monai.networks import EpsSegHVAE

TINY = {"num_filters": 8, "num_blocks": 1, "latent_channels": 8, "dropout": 0.0}


def tiny_net(spatial_dims: int, num_classes: int = 4, **kwargs) -> EpsSegHVAE:
    if spatial_dims == 2:
        kwargs.setdefault("patch_size", 32)
        kwargs.setdefault("head_window", 4)
    else:
        kwargs.setdefault("patch_size", 16)
        kwargs.setdefault("head_window", 2)
    return EpsSegHVAE(spatial_dims, kwargs.pop("in_channels", 1), num_classes, **{**TINY, **kwargs})


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("in_channels", [1, 2])
def test_training_output_shapes(spatial_dims, in_channels):
    net = tiny_net(spatial_dims, in_channels=in_channels).train()
    p = net.patch_size
    x = torch.randn((3, in_channels) + (p,) * spatial_dims)
    out = net(x)
    assert isinstance(out, dict)
    assert out["logits"].shape == (3, 4)
    assert out["reconstruction"].shape == x.shape
    assert len(out["mu"]) == len(out["logvar"]) == len(out["z"]) == 3
    for level, size in enumerate(net.latent_sizes()):
        assert out["mu"][level].shape == (3, 8) + size
        assert out["logvar"][level].shape == (3, 8) + size
    for level in range(2):
        assert out["prior_mu"][level].shape == out["mu"][level].shape
    assert out["prior_mu"][-1].shape == (4, 8)
    assert all(out["logvar"][level].abs().max() <= 10 for level in range(3))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_eval_output_is_tensor(spatial_dims):
    net = tiny_net(spatial_dims).eval()
    x = torch.randn((2, 1) + (net.patch_size,) * spatial_dims)
    y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 4)
    # eval mode is deterministic (no sampling, no dropout) and equals the head on the posterior means
    torch.testing.assert_close(net(x), y)
    torch.testing.assert_close(net.forward_train(x)["logits"], y)


def test_eval_accepts_larger_inputs_and_reads_centre():
    net = tiny_net(2).eval()
    assert net(torch.randn(1, 1, 48, 48)).shape == (1, 4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("reconstruct_center", [None, 1])
def test_gradients_reach_every_trainable_parameter(spatial_dims, reconstruct_center):
    from epsseg_monai.losses import EpsSegLoss

    net = tiny_net(spatial_dims, reconstruct_center=reconstruct_center).train()
    x = torch.randn((4, 1) + (net.patch_size,) * spatial_dims)
    terms = EpsSegLoss()(net(x), x, torch.tensor([1, 2, 3, 4]))
    terms["loss"].backward()
    missing = [
        n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for n, p in net.named_parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "spatial_dims, kwargs",
    [
        (2, {"patch_size": 64, "head_window": 8, "num_blocks": 2, "reconstruct_center": 1}),
        (2, {"patch_size": 64, "head_window": 8, "num_blocks": 3, "num_final_blocks": 1, "reconstruct_center": 3}),
        (2, {"patch_size": 32, "num_levels": 1, "head_window": 4, "num_blocks": 2, "reconstruct_center": 1}),
        (3, {"patch_size": 32, "num_levels": 2, "num_blocks": 1, "reconstruct_center": 1}),
    ],
)
def test_reconstruct_center_equals_whole_patch_reconstruction(spatial_dims, kwargs):
    """In eval mode the centre-only decoder gives exactly the whole-patch reconstruction on the inpainted centre."""
    from epsseg_monai.utils import center_region_slices

    torch.manual_seed(0)
    crop = tiny_net(spatial_dims, **kwargs).eval()
    whole = tiny_net(spatial_dims, **{**kwargs, "reconstruct_center": None}).eval()
    whole.load_state_dict(crop.state_dict())
    size, m = crop.patch_size, kwargs["reconstruct_center"]
    x = torch.randn((2, 1) + (size,) * spatial_dims)
    out_crop, out_whole = crop.forward_train(x), whole.forward_train(x)
    side = crop.reconstruction_size(size)
    assert side < size and (size - side) % 2 == 0
    assert out_crop["reconstruction"].shape == (2, 1) + (side,) * spatial_dims
    assert out_whole["reconstruction"].shape == x.shape

    def centre(t):
        return t[(slice(None), slice(None)) + center_region_slices(t.shape[2:], m)]

    torch.testing.assert_close(centre(out_crop["reconstruction"]), centre(out_whole["reconstruction"]))
    torch.testing.assert_close(out_crop["logits"], out_whole["logits"])
    for a, b in zip(out_crop["mu"], out_whole["mu"]):
        torch.testing.assert_close(a, b)
    # the margin is needed: a decoder crop without it changes the centre
    crop._decoder_radius = 0
    assert not torch.allclose(centre(crop.forward_train(x)["reconstruction"]), centre(out_whole["reconstruction"]))


def test_reconstruction_size():
    net = EpsSegHVAE(2, 1, 4, num_filters=8, num_blocks=2, reconstruct_center=1)
    assert net.reconstruction_size(64) == 12  # 1 + 2 * (2 blocks x 2 convs + output conv), even like 64
    assert net.reconstruction_size(65) == 11
    assert net.reconstruction_size(8) == 8
    assert EpsSegHVAE(2, 1, 4, num_filters=8, num_blocks=2).reconstruction_size(64) == 64


def test_training_samples_latents():
    net = tiny_net(2).train()
    x = torch.randn(2, 1, 32, 32)
    out = net(x)
    assert not torch.equal(out["z"][-1], out["mu"][-1])


def test_learnable_prior_is_trained():
    from epsseg_monai.losses import EpsSegLoss

    net = tiny_net(2, learnable_prior=True).train()
    x = torch.randn(4, 1, 32, 32)
    EpsSegLoss()(net(x), x, torch.tensor([1, 2, 3, 4]))["loss"].backward()
    assert net.prior.means.grad is not None and net.prior.means.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"patch_size": 30}, "divisible"),
        ({"patch_size": 16, "head_window": 4}, "smaller than"),
        ({"num_classes": 9}, "latent_channels"),
        ({"reconstruct_center": 0}, "reconstruct_center"),
        ({"reconstruct_center": 33}, "reconstruct_center"),
    ],
)
def test_constructor_errors(kwargs, match):
    args = {"spatial_dims": 2, "in_channels": 1, "num_classes": 4, **TINY, "patch_size": 32, "head_window": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        EpsSegHVAE(**args)


def test_input_errors():
    net = tiny_net(2)
    with pytest.raises(ValueError, match="Expected input"):
        net(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="Expected input"):
        net(torch.randn(2, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        net.train()(torch.randn(2, 1, 36, 36))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_jit_trace_eval(spatial_dims):
    net = tiny_net(spatial_dims).eval()
    x = torch.randn((2, 1) + (net.patch_size,) * spatial_dims)
    traced = torch.jit.trace(net, x)
    x2 = torch.randn((5, 1) + (net.patch_size,) * spatial_dims)
    torch.testing.assert_close(traced(x2), net(x2))


def test_reference_defaults():
    net = EpsSegHVAE(2, 1, 4)
    assert net.num_levels == 3 and net.latent_channels == 32 and net.patch_size == 64
    assert net.latent_sizes() == [(32, 32), (16, 16), (8, 8)]
    assert len(net.bottom_up[0]) == 2 + 5  # conv, blur-pool, 5 residual blocks
    assert net.head.window == 8
