"""Tests of ``epsseg_monai.networks.nets.dense_predictor``: the à-trous dense pass equals the phase tree, and it
exports to TorchScript once for every image size."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from epsseg_monai.networks import DensePredictor
from epsseg_monai.networks.nets.dense_predictor import dilate
from tests.inferers.test_dense import images, network

#: Image sizes per spatial dims: odd and even sides, not multiples of the step, one side smaller than the patch.
SIZES = {2: [(23, 19), (40, 33)], 3: [(11, 9, 13)]}


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("fine", [(), (0, 1)], ids=["paper-head", "fine-head"])
@pytest.mark.parametrize("pad_mode", ["reflect", None])
def test_equals_forward_dense(spatial_dims: int, fine: tuple[int, ...], pad_mode: str | None) -> None:
    net = network(spatial_dims, head_fine_levels=fine)
    predictor = net.dense_predictor(pad_mode=pad_mode)
    for spatial in SIZES[spatial_dims]:
        if pad_mode is None:  # a valid pass needs room for the head window
            spatial = tuple(s + 16 for s in spatial)
        x = images(spatial)
        with torch.no_grad():
            expected = net.forward_dense(x, pad_mode=pad_mode)
            got = predictor(x)
        assert got.shape == expected.shape
        if pad_mode is not None:
            assert got.shape[2:] == x.shape[2:]
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
        assert expected.std() > 0.05  # the comparison is not between near-constant maps


def test_copy_of_weights_and_eval_mode() -> None:
    net = network(2, head_fine_levels=(0,))
    predictor = net.dense_predictor()
    predictor.train()
    assert not predictor.training
    assert not any(p.requires_grad for p in predictor.parameters())
    x = images((20, 20))
    before = predictor(x)
    with torch.no_grad():  # later training of the network does not change an exported predictor
        for p in net.parameters():
            p.add_(1.0)
    assert torch.equal(predictor(x), before)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_traced_once_valid_for_every_size(spatial_dims: int) -> None:
    net = network(spatial_dims, head_fine_levels=(0, 1))
    predictor = net.dense_predictor()
    example = images(SIZES[spatial_dims][0], batch=1)
    traced = torch.jit.trace(predictor, example, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for spatial in [*SIZES[spatial_dims], tuple(s + 5 for s in SIZES[spatial_dims][0])]:
        x = images(spatial, batch=2, seed=3)
        with torch.no_grad():
            expected = net.forward_dense(x)
        got = loaded(x)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_dilate_refuses_strided_layers() -> None:
    with pytest.raises(ValueError, match="stride 1"):
        dilate(nn.Conv2d(1, 1, 3, stride=2, padding=1), 2)
    with pytest.raises(ValueError, match="strided spatial layer"):
        dilate(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2)), 2)
    conv = dilate(nn.Conv2d(1, 1, 3, padding=1), 4)
    assert conv.dilation == (4, 4) and conv.padding == (4, 4)
    assert nn.Conv2d(1, 1, 3, padding=1).dilation == (1, 1)  # the original is untouched (a copy)


def test_bad_pad_mode() -> None:
    with pytest.raises(ValueError, match="pad_mode"):
        DensePredictor(network(2), pad_mode="circular")


def test_shared_weights_train_the_network() -> None:
    """``share_weights``: the same parameter tensors, gradients reach the network, train() is followed."""
    net = network(2, head_fine_levels=(0, 1))
    predictor = DensePredictor(net, pad_mode=None, share_weights=True)
    ids = {id(p) for p in net.parameters()}
    assert {id(p) for p in predictor.parameters()} <= ids
    predictor.train()
    assert predictor.training and all(p.requires_grad for p in net.parameters())
    predictor(images((40, 40))).square().mean().backward()
    assert net.stem[0].weight.grad is not None and net.head.net[2].weight.grad is not None


def test_atrous_dense_training_pass_equals_phase_tree() -> None:
    """``dense_training="atrous"`` gives the phase tree's logits at the labelled pixels (eval mode)."""
    from epsseg_monai.networks import EpsSegHVAE

    tree = network(2, head_fine_levels=(0,))
    atrous = EpsSegHVAE(2, 1, 3, num_levels=2, num_filters=8, num_blocks=1, latent_channels=4, head_window=4,
                        patch_size=16, head_fine_levels=(0,), dense_training="atrous").eval()  # fmt: skip
    atrous.load_state_dict(tree.state_dict())
    crops = images((40, 40))
    labels = torch.zeros((2, 40, 40), dtype=torch.long)
    labels[0, 20, 18], labels[1, 15, 25], labels[1, 22, 21] = 1, 2, 3
    with torch.no_grad():
        a, b = tree.dense_training_pass(crops, labels), atrous.dense_training_pass(crops, labels)
    mask = a["dense_labels"] > 0
    assert mask.sum() == 3 and torch.equal(a["dense_labels"], b["dense_labels"])
    assert torch.allclose(a["dense_logits"].permute(0, 2, 3, 1)[mask], b["dense_logits"].permute(0, 2, 3, 1)[mask],
                          atol=1e-4)  # fmt: skip
    with pytest.raises(ValueError, match="dense_training"):
        EpsSegHVAE(2, 1, 3, dense_training="dilated")
