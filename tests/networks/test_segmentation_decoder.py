"""ε-Seg+'s segmentation decoder: the block, and the network's training, patch and dense passes through it."""

from __future__ import annotations

import pytest
import torch

from epsseg_monai.networks import EpsSegHVAE
from epsseg_monai.networks.blocks import SegmentationDecoder
from epsseg_monai.networks.nets.eps_seg_hvae import pad_border

TINY = {"num_filters": 8, "num_blocks": 1, "latent_channels": 8, "dropout": 0.0, "num_levels": 2}


def decoder_net(spatial_dims: int, **kwargs) -> EpsSegHVAE:
    size = 16 if spatial_dims == 2 else 8
    args = {**TINY, "patch_size": size, "head_window": 2, "segmentation_decoder": True, **kwargs}
    return EpsSegHVAE(spatial_dims, 1, 3, **args)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_block_gives_full_resolution_logits(spatial_dims):
    block = SegmentationDecoder(spatial_dims, latent_channels=4, num_filters=6, num_levels=2, num_classes=3)
    sizes = [(16,) * spatial_dims, (8,) * spatial_dims, (4,) * spatial_dims]
    features = [torch.randn(2, 6, *s) for s in sizes]
    out = block(torch.randn(2, 4, *sizes[-1]), features)
    assert out.shape == (2, 3, *sizes[0])
    with pytest.raises(ValueError, match="3 feature maps"):
        block(torch.randn(2, 4, *sizes[-1]), features[1:])
    with pytest.raises(ValueError, match="spatial size of the top features"):
        block(torch.randn(2, 4, *sizes[1]), features)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_training_pass_gives_logits_at_every_crop_pixel(spatial_dims):
    net = decoder_net(spatial_dims).train()
    p, crop = net.patch_size, 10 if spatial_dims == 3 else 22  # not a multiple of 2**num_levels
    labels = torch.randint(0, 4, (2,) + (crop,) * spatial_dims)
    out = net(torch.randn((3, 1) + (p,) * spatial_dims), torch.randn((2, 1) + (crop,) * spatial_dims), labels)
    assert out["logits"].shape == (3, 3)  # the centre-pixel head stays (an auxiliary term)
    assert out["dense_logits"].shape == (2, 3) + (crop,) * spatial_dims
    assert torch.equal(out["dense_labels"], labels)
    # the dense cross-entropy trains the decoder and the encoder it reads
    out["dense_logits"].sum().backward()
    assert net.segmentation_decoder.out.weight.grad.abs().sum() > 0
    assert net.stem[0].weight.grad.abs().sum() > 0
    assert net.top_posterior.conv.weight.grad.abs().sum() > 0


def test_prediction_passes_agree():
    """The patch classifier, the padded dense pass and the valid dense pass all read the decoder's logits."""
    torch.manual_seed(0)
    net = decoder_net(2).eval()
    image = torch.randn(1, 1, 30, 27)
    margin = net.decoder_context
    assert net.dense_padding() == [(margin, margin)] * 2 and net.dense_receptive_field() == margin
    dense = net.forward_dense(image)
    assert dense.shape == (1, 3, 30, 27)
    inner = (..., slice(margin, -margin), slice(margin, -margin))
    expected = net.decode_pixels(pad_border(image, [(margin, margin)] * 2, "reflect"))[inner]
    torch.testing.assert_close(dense, expected)
    valid = net.forward_dense(image, pad_mode=None)
    assert valid.shape == (1, 3, 30 - 2 * margin, 27 - 2 * margin)
    torch.testing.assert_close(valid, net.decode_pixels(image)[inner])
    patch = torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(net(patch), net.decode_pixels(patch)[..., 8, 8])
    with pytest.raises(ValueError, match="too small for a valid pass"):
        net.forward_dense(torch.randn(1, 1, 16, 40), pad_mode=None)


def test_options_and_errors():
    plain = EpsSegHVAE(2, 1, 3, **TINY, patch_size=16, head_window=2)
    assert plain.segmentation_decoder is None
    with pytest.raises(RuntimeError, match="segmentation_decoder=True"):
        plain.decode_pixels(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="decoder_context"):
        decoder_net(2, decoder_context=-1)
    net = decoder_net(2, decoder_context=3, decoder_blocks=2)
    assert net.dense_padding() == [(3, 3), (3, 3)]
    assert len(net.segmentation_decoder.fuse[0]) == 3  # the 1x1 fusion and two residual blocks
    with pytest.raises(NotImplementedError, match="segmentation decoder"):
        net.dense_predictor()
