"""Tests of the network's dense pass (``EpsSegHVAE.forward_dense``, the phase tree) and the fine-detail head.

The dense pass must give, at every pixel, exactly the centre-pixel logits of the patch around that pixel (away
from the image border, with patches large enough that their own border is outside the receptive field), for
the reference head and for the fine-detail head of ε-Seg+; its ``needed`` restriction and its valid mode must
give the same numbers (and gradients) as the full pass.
"""

from __future__ import annotations

import pytest
import torch

from epsseg_monai.inferers import DenseInferer, PatchCenterInferer
from epsseg_monai.networks import EpsSegHVAE
from epsseg_monai.networks.nets.phase_tree import PhaseTree
from tests.inferers.test_dense import CASES, images, network, reference_patch

FINE = [(0,), (1,), (0, 1, 2)]


def assert_dense_equals_patch_mode(net: EpsSegHVAE, dims: int, seed: int) -> None:
    """Away from the border (one receptive radius in), ``DenseInferer`` equals the patch-by-patch reference."""
    patch, window = CASES[dims]
    radius = net.dense_receptive_field()
    big = reference_patch(patch, window, radius)
    spatial = (2 * radius + 4, 2 * radius + 3) if dims == 2 else (2 * radius + 2,) * 3
    x = images(spatial, batch=1, seed=seed)
    probs = DenseInferer()(x, net)
    mask = torch.zeros((1, *spatial), dtype=torch.bool)
    mask[(0, *(slice(radius, s - radius) for s in spatial))] = True
    assert int(mask.sum()) >= 2
    with torch.no_grad():
        expected = PatchCenterInferer(big, batch_size=16)(x, net, mask=mask)
    sel = mask[:, None].expand_as(probs)
    torch.testing.assert_close(probs[sel], expected[sel], rtol=0, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3], ids=["2d", "3d"])
@pytest.mark.parametrize("fine", FINE, ids=lambda f: "fine-" + "".join(map(str, f)))
def test_fine_head_dense_equals_patch_mode(dims: int, fine: tuple[int, ...]) -> None:
    """Away from the border, the dense pass equals the patch-by-patch reference, fine-detail head included."""
    net = network(dims, head_fine_levels=fine)
    assert_dense_equals_patch_mode(net, dims, seed=7)


def test_fine_features_change_the_prediction() -> None:
    """The fine-detail head really reads the fine maps: zeroing its weights changes the logits."""
    net = network(2, head_fine_levels=(0, 1))
    x = images((21, 19), batch=1, seed=2)
    with torch.no_grad():
        before = net.forward_dense(x)
        for proj in net.head.fine:
            proj.weight.zero_()
        after = net.forward_dense(x)
    assert (before - after).abs().max() > 1e-2


@pytest.mark.parametrize("dims", [2, 3], ids=["2d", "3d"])
def test_needed_positions_match_the_full_pass(dims: int) -> None:
    """With a ``needed`` mask, the needed logits (and their gradients) equal the full pass; skipped sub-grids are 0."""
    net = network(dims, head_fine_levels=(0, 1))
    spatial = (17, 14) if dims == 2 else (9, 8, 10)
    x = images(spatial, batch=3, seed=1)
    needed = torch.zeros((3, *spatial), dtype=torch.bool)
    needed[(0, *(s // 2 for s in spatial))] = True
    needed[(2, *(1 for _ in spatial))] = True
    needed[(2, *(s - 1 for s in spatial))] = True  # item 1 needs nothing
    sel = needed[:, None].expand(-1, 3, *spatial)

    def grads(mask: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        net.zero_grad()
        out = net.forward_dense(x, needed=mask)
        out[sel].square().sum().backward()
        return out.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]

    full, full_grads = grads(None)
    part, part_grads = grads(needed)
    torch.testing.assert_close(part[sel], full[sel], rtol=1e-5, atol=1e-6)
    computed = part != 0  # the needed positions' sub-grids (of the items that need them)
    torch.testing.assert_close(part[computed], full[computed], rtol=1e-5, atol=1e-6)
    assert not computed[1].any()  # item 1 needs nothing
    assert computed.float().mean() < 0.25  # most of the tree was skipped
    assert len(part_grads) == len(full_grads) > 0
    for a, b in zip(part_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_needed_skips_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """One needed pixel runs one path of the tree (one stage per level), not all ``2**(L*d)`` sub-grids."""
    net = network(2, head_fine_levels=(0,))
    calls: list[int] = []
    original = PhaseTree.stage

    def counting(self: PhaseTree, level: int, x: torch.Tensor, phase, with_stem: bool = True) -> torch.Tensor:
        calls.append(x.shape[0])
        return original(self, level, x, phase, with_stem)

    monkeypatch.setattr(PhaseTree, "stage", counting)
    x = images((20, 20), batch=2, seed=3)
    needed = torch.zeros((2, 20, 20), dtype=torch.bool)
    needed[1, 5, 6] = True
    with torch.no_grad():
        net.forward_dense(x, needed=needed)
    assert calls == [1, 1]  # 2 levels, one phase each, on the one batch item that needs it


@pytest.mark.parametrize("fine", [(), (0, 2)], ids=["reference-head", "fine-head"])
def test_valid_pass_on_a_crop(fine: tuple[int, ...]) -> None:
    """``pad_mode=None`` on a crop gives the padded pass's logits of the crop's inner pixels."""
    net = network(2, head_fine_levels=fine)
    x = images((40, 36), batch=1, seed=4)
    (b0, a0), (b1, a1) = net.dense_padding()
    with torch.no_grad():
        whole = net.forward_dense(x)
        crop = x[:, :, 5:33, 3:30]
        valid = net.forward_dense(crop, pad_mode=None)
    assert valid.shape[2:] == (28 - b0 - a0, 27 - b1 - a1)
    expected = whole[:, :, 5 + b0 : 33 - a0, 3 + b1 : 30 - a1]
    # the crop's own border is zero-padded inside the network, so only the pixels far from it are equal
    r = net.dense_receptive_field() - max(b0, a0, b1, a1)
    inner = (slice(None), slice(None), slice(r, -r or None), slice(r, -r or None))
    if valid[inner].numel():
        torch.testing.assert_close(valid[inner], expected[inner], rtol=1e-5, atol=1e-5)
    assert valid.shape == expected.shape


def test_fine_levels_are_checked() -> None:
    with pytest.raises(ValueError, match="head_fine_levels must be in 0..num_levels"):
        EpsSegHVAE(2, 1, 3, num_levels=2, patch_size=16, head_window=4, head_fine_levels=(3,))
    with pytest.raises(ValueError, match="multiple of 8"):
        EpsSegHVAE(2, 1, 3, num_levels=3, patch_size=24, head_window=3, head_fine_levels=(3,))
    net = EpsSegHVAE(2, 1, 3, num_levels=2, patch_size=16, head_window=4, head_fine_levels=(2,))
    with pytest.raises(ValueError, match="fine-detail head needs patch sizes"):
        net.dense_padding(patch_size=20)  # centre 10: not a cell centre of level 2


def test_fine_head_trains_in_patch_mode() -> None:
    """The fine-detail head's weights get gradients from the training pass (masked patches)."""
    net = network(2, head_fine_levels=(0, 1)).train()
    out = net(images((16, 16), batch=4, seed=5))
    out["logits"].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.head.fine.parameters())


@pytest.mark.parametrize("dims", [2, 3], ids=["2d", "3d"])
@pytest.mark.parametrize("fine", [(0,), (0, 1), (0, 1, 2)], ids=lambda f: "fine-" + "".join(map(str, f)))
def test_unmasked_centre_features_equal_the_whole_patch(dims: int, fine: tuple[int, ...]) -> None:
    """The fine features computed on the centre crop equal those of the whole patch (eval mode)."""
    patch = 32 if dims == 2 else 16
    net = network(dims, head_fine_levels=fine, patch_size=patch)
    x = images((patch,) * dims, batch=2, seed=8)
    with torch.no_grad():
        expected = net.center_features(net.bottom_up_pass(x, with_stem=True))
        got = net.unmasked_center_features(x)
    assert len(got) == len(fine)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    if fine == (0,):  # the stem needs only a small centre crop: its features do not see the patch border
        assert 2 * net.fine_radius() + 1 < patch


def test_training_pass_reads_fine_features_from_the_unmasked_patches() -> None:
    """With ``unmasked``, the head's fine inputs come from the unmasked patches; the rest from the masked ones."""
    net = network(2, head_fine_levels=(0, 1), patch_size=32)
    x = images((32, 32), batch=3, seed=9)
    masked = x.clone()
    masked[:, :, 16, 16] = 0.0
    with torch.no_grad():
        net.eval()
        plain = net.forward_train(masked)["logits"]
        fixed = net.forward_train(masked, unmasked=x)["logits"]
        expected = net.head(net.top_posterior(net.bottom_up_pass(masked)[-1])[0], net.unmasked_center_features(x))
    assert (plain - fixed).abs().max() > 1e-4  # the masked centre pixel changes the fine features
    torch.testing.assert_close(fixed, expected)
    with pytest.raises(ValueError, match="must match the inputs"):
        net.forward_train(masked, unmasked=x[:, :, :16])


@pytest.mark.parametrize("dims", [2, 3], ids=["2d", "3d"])
def test_stem_without_blocks_dense_equals_patch_mode(dims: int) -> None:
    """``stem_blocks=0`` (ε-Seg+'s cheaper stem): the stem is the 5x5 conv alone, the receptive field shrinks by the
    block's radius, and the dense pass still equals the patch-by-patch reference, fine-detail head included."""
    with_block = network(dims, head_fine_levels=(0, 1))
    net = network(dims, head_fine_levels=(0, 1), stem_blocks=0)
    assert len(net.stem) == 2 and len(with_block.stem) == 3
    assert net.dense_receptive_field() == with_block.dense_receptive_field() - 2
    assert_dense_equals_patch_mode(net, dims, seed=3)
    with pytest.raises(ValueError, match="stem_blocks must be >= 0"):
        network(dims, stem_blocks=-1)
