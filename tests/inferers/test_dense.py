"""Tests of ``epsseg_monai.inferers.dense``: ``DenseInferer`` (every pixel in one pass), its receptive field, entropy.

The dense mode is checked against two independent references: the plain strided network on the padded image
(the phase-0 sub-grid, exact at every pixel) and :class:`PatchCenterInferer` on patches large enough that their
border is outside the receptive field (exact away from the image border). Slabs, crops and the image border
fallback are checked against the dense mode itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from epsseg_monai.inferers import DenseInferer, PatchCenterInferer, class_entropy
from epsseg_monai.networks import EpsSegHVAE
from epsseg_monai.networks.nets.phase_tree import PhaseTree

#: (spatial dims) -> (training patch size, head window) of the tiny networks.
CASES = {2: (16, 4), 3: (8, 2)}
#: Gain of every convolution weight, so that the random network's logits vary from pixel to pixel by O(1)
#: (with the default initialisation they vary by ~1e-3 and every comparison below would be nearly vacuous).
CONV_GAIN = 2.0
#: 2**num_levels of the tiny networks.
FACTOR = 4


def network(spatial_dims: int, seed: int = 0, **kwargs) -> EpsSegHVAE:
    """A tiny ε-Seg network in eval mode, with random batch-norm statistics and affine parameters."""
    patch, window = CASES[spatial_dims]
    kwargs.setdefault("patch_size", patch)
    torch.manual_seed(seed)
    net = EpsSegHVAE(
        spatial_dims,
        1,
        3,
        num_levels=2,
        num_filters=8,
        num_blocks=1,
        latent_channels=4,
        head_window=window,
        **kwargs,
    )
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.modules.conv._ConvNd):
                m.weight.mul_(CONV_GAIN)
    return net.eval()


def images(spatial: tuple[int, ...], batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn((batch, 1, *spatial), generator=torch.Generator().manual_seed(seed))


def subgrid(t: torch.Tensor, step: int, start: int = 0) -> torch.Tensor:
    return t[(slice(None), slice(None), *(slice(start, None, step),) * (t.ndim - 2))]


def flat_padding(pads: list[tuple[int, int]]) -> list[int]:
    """``F.pad``'s argument for ``(before, after)`` per spatial axis (it takes the last axis first)."""
    return [v for p in reversed(pads) for v in p]


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def net(request: pytest.FixtureRequest) -> EpsSegHVAE:
    return network(request.param)


@pytest.fixture(scope="module")
def net2d() -> EpsSegHVAE:
    return network(2)


# ------------------------------------------------------------------ exactness by construction
@pytest.mark.parametrize("patch_size", [None, 24], ids=["net-patch", "patch-24"])
def test_phase_zero_subgrid_is_the_strided_network(net: EpsSegHVAE, patch_size: int | None) -> None:
    """Pixels ``f * i`` are the plain (strided) network's head slid over the padded image's top map."""
    dims = net.spatial_dims
    spatial = (23, 19) if dims == 2 else (11, 9, 13)
    x = images(spatial)
    inferer = DenseInferer(patch_size=patch_size)
    logits = inferer.logits(x, net)
    assert logits.shape == (2, 3, *spatial) and logits.dtype == torch.float32
    x_pad = F.pad(x, flat_padding(inferer.image_padding(net)), mode="reflect")
    with torch.no_grad():
        expected = net.head.forward_dense(net.top_posterior(net.bottom_up_pass(x_pad)[-1])[0])
    got = subgrid(logits, FACTOR)
    assert got.shape[2:] == tuple(math.ceil(s / FACTOR) for s in spatial)
    expected = expected[(slice(None), slice(None), *(slice(0, s) for s in got.shape[2:]))]
    assert expected.shape == got.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert expected.std(dim=tuple(range(2, expected.ndim))).min() > 0.1  # the logits vary: not a vacuous check


def reference_patch(patch: int, window: int, radius: int) -> int:
    """Smallest ``patch + 2 f k`` whose half reaches ``radius``; it keeps the head window's alignment."""
    size = patch
    while size // 2 < radius:
        size += 2 * FACTOR
    assert (size // FACTOR - window) % 2 == (patch // FACTOR - window) % 2
    return size


@pytest.mark.parametrize(
    "dims, patch_size", [(2, None), (2, 20), (3, None)], ids=["2d-net-patch", "2d-patch-20", "3d-net-patch"]
)
def test_matches_reference_with_a_border_free_patch(dims: int, patch_size: int | None) -> None:
    """Away from the image border, dense = the reference on patches whose border is outside the receptive field."""
    net = network(dims)
    patch, window = CASES[dims]
    inferer = DenseInferer(patch_size=patch_size)
    radius = inferer.receptive_field(net)
    big = reference_patch(patch if patch_size is None else patch_size, window, radius)
    spatial = (2 * radius + 4, 2 * radius + 3) if dims == 2 else (2 * radius + 1,) * 3
    x = images(spatial, batch=1, seed=3)
    probs = inferer(x, net)
    mask = torch.zeros((1, *spatial), dtype=torch.bool)
    mask[(0, *(slice(radius, s - radius) for s in spatial))] = True  # distance >= radius to every border
    assert 1 <= int(mask.sum()) <= 12
    with torch.no_grad():
        expected = PatchCenterInferer(big, batch_size=16)(x, net, mask=mask)
    sel = mask[:, None].expand_as(probs)
    torch.testing.assert_close(probs[sel], expected[sel], rtol=0, atol=1e-5)


def test_training_patch_context_differs(net: EpsSegHVAE) -> None:
    """With the training patch, the reference sees zero-padded features where the dense mode sees the image."""
    dims = net.spatial_dims
    patch, _ = CASES[dims]
    spatial = (21, 18) if dims == 2 else (9, 8, 10)
    x = images(spatial, seed=5)
    dense = DenseInferer()(x, net)
    with torch.no_grad():
        reference = PatchCenterInferer(patch, batch_size=512)(x, net)
    assert (dense - reference).abs().max() > 1e-3  # the two modes are not the same function
    agreement = (dense.argmax(1) == reference.argmax(1)).float().mean().item()
    assert 0.0 <= agreement <= 1.0
    torch.testing.assert_close(reference.sum(1), torch.ones_like(reference[:, 0]))


# ------------------------------------------------------------------ slabs and crops
def stage_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the spatial shape of every stage input evaluated by the inferer."""
    rows: list[tuple[int, ...]] = []
    original = PhaseTree.stage

    def counting(self: PhaseTree, level: int, x: torch.Tensor, phase: Sequence[int], with_stem: bool = True):
        rows.append(tuple(x.shape[2:]))
        return original(self, level, x, phase, with_stem)

    monkeypatch.setattr(PhaseTree, "stage", counting)
    return rows


@pytest.mark.parametrize("max_slab_voxels", [1, 40], ids=["rows-1", "rows-several"])
def test_slabs_equal_one_piece(net: EpsSegHVAE, max_slab_voxels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    dims = net.spatial_dims
    shapes = [(37, 21), (5, 7)] if dims == 2 else [(13, 9, 11), (4, 5, 7)]
    phase_nodes = sum(2 ** (dims * (level + 1)) for level in range(2))  # stage evaluations in one piece
    for spatial in shapes:
        x = images(spatial, seed=sum(spatial))
        whole = DenseInferer(max_slab_voxels=None).logits(x, net)
        rows = stage_calls(monkeypatch)
        sliced = DenseInferer(max_slab_voxels=max_slab_voxels).logits(x, net)
        monkeypatch.undo()
        if spatial[0] > 10:
            assert len(rows) > phase_nodes  # the stages really were evaluated in several pieces
        torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-5)


def test_stage_tiles_split_every_axis_in_3d() -> None:
    """A large volume's stage is tiled along all three axes (slabs spanning whole planes would not bound memory)."""
    net = network(3)
    x = torch.randn((1, 1, 50, 46, 54), generator=torch.Generator().manual_seed(4))
    phase = (1, 0, 1)
    tree = PhaseTree(net, max_slab_voxels=2000)
    out_sizes = [-(-(s - p) // 2) for s, p in zip(x.shape[2:], phase)]
    rows = tree.rows(x.shape[2:], out_sizes, 2, tree.stage_radius(0), net.bottom_up[0][0].out_channels)
    assert all(r < m for r, m in zip(rows, out_sizes)), (rows, out_sizes)
    with torch.no_grad():
        tiled = tree.run_stage(0, x, phase)
        whole = tree.stage(0, x, phase)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims, side, budgets", [(2, 64, (100, 300)), (3, 48, (2000, 5000))], ids=["2d", "3d"])
def test_tiles_fit_the_budget(dims: int, side: int, budgets: tuple[int, ...]) -> None:
    """The largest map of a stage tile (full-resolution conv output with halo, x channels) stays within budget."""
    net = network(dims)
    x = torch.zeros((1, 1) + (side,) * dims)
    width = net.bottom_up[0][0].out_channels
    assert side**dims * width > max(budgets) * 64  # the whole map does not fit: tiling is needed

    def stage_rows(budget: int | None, phase: tuple[int, ...]) -> list[int]:
        tree = PhaseTree(net, max_slab_voxels=budget)
        out_sizes = [-(-(side - p) // 2) for p in phase]
        return tree.rows(x.shape[2:], out_sizes, 2, tree.stage_radius(0), width)

    for budget in budgets:
        halo = PhaseTree(net).stage_radius(0)
        rows = stage_rows(budget, (0,) * dims)
        assert math.prod(min(side, 2 * r + 2 * halo + 1) for r in rows) * width <= budget * 64
        assert max(rows) <= 2 * min(rows)  # near-cubic tiles
    # a budget below one output row plus its halo falls back to the thinnest tiles; None means one piece
    assert stage_rows(1, (0,) * dims) == [1] * dims
    assert stage_rows(None, (1,) * dims) == [side // 2] * dims


def test_default_slabs_equal_one_piece(net2d: EpsSegHVAE) -> None:
    x = images((45, 31), batch=1, seed=11)
    torch.testing.assert_close(
        DenseInferer().logits(x, net2d), DenseInferer(max_slab_voxels=None).logits(x, net2d), rtol=1e-5, atol=1e-5
    )


def test_crop_gives_the_same_prediction_away_from_its_border(net2d: EpsSegHVAE) -> None:
    """Dense prediction is shift-equivariant: a crop (at odd offsets) predicts its inner pixels like the image."""
    inferer = DenseInferer(max_slab_voxels=64)
    radius = inferer.receptive_field(net2d)
    x = images((2 * radius + 20, 2 * radius + 17), batch=1, seed=7)
    a, b, c, d = 3, 3 + 2 * radius + 6, 5, 5 + 2 * radius + 3
    full = inferer(x, net2d)
    crop = inferer(x[..., a:b, c:d], net2d)
    assert crop.shape == (1, 3, b - a, d - c)
    inner = (slice(None), slice(None), slice(radius, b - a - radius), slice(radius, d - c - radius))
    expected = full[..., a:b, c:d][inner]
    assert expected.shape[2:] == (6, 3)
    torch.testing.assert_close(crop[inner], expected, rtol=0, atol=1e-5)
    # near the crop border the context differs, and so does the prediction
    assert (crop[..., :2, :] - full[..., a : a + 2, c:d]).abs().max() > 1e-3


# ------------------------------------------------------------------ outer tiles (images larger than memory)
@pytest.mark.parametrize(
    "spatial, tile_size", [((97, 83), 40), ((97, 83), (60, 29)), ((30, 26, 28), (16, 13, 20))], ids=str
)
def test_tiled_prediction_has_no_seams(spatial: tuple[int, ...], tile_size: int | tuple[int, ...]) -> None:
    """Predicting an image tile by tile (margins from the receptive field) equals predicting it whole."""
    net = network(len(spatial))
    x = images(spatial, batch=1, seed=len(spatial))
    inferer = DenseInferer(tile_size=tile_size, max_slab_voxels=None)
    tiles = inferer.tiles(net, spatial)
    assert len(tiles) > 1
    cover = torch.zeros(spatial, dtype=torch.int64)
    for read, keep, write in tiles:
        cover[write] += 1
        for r, k, w in zip(read, keep, write):
            assert r.start + k.start == w.start and r.start + k.stop == w.stop
    assert (cover == 1).all()  # the tiles partition the image
    whole = DenseInferer(max_slab_voxels=None)(x, net)
    torch.testing.assert_close(inferer(x, net), whole, rtol=0, atol=1e-5)


def test_tiles_need_their_margin() -> None:
    """Without the receptive-field margin a tile's border pixels would differ: the margin is what removes seams."""
    net = network(2)
    x = images((97, 83), batch=1, seed=2)
    whole = DenseInferer(max_slab_voxels=None)(x, net)
    left = DenseInferer(max_slab_voxels=None)(x[..., :, :40], net)  # the first column of tiles, no margin
    assert (left[..., 30:40] - whole[..., 30:40]).abs().max() > 1e-3


def test_predict_array_reads_and_writes_memory_maps(tmp_path) -> None:
    """``predict_array`` streams a memory-mapped image into a memory-mapped output, equal to ``__call__``."""
    np = pytest.importorskip("numpy")
    net = network(2)
    x = images((70, 90), batch=1, seed=9)
    image = np.lib.format.open_memmap(tmp_path / "image.npy", mode="w+", dtype=np.float32, shape=(1, 70, 90))
    image[:] = x[0].numpy()
    image.flush()
    image = np.load(tmp_path / "image.npy", mmap_mode="r")
    out = np.lib.format.open_memmap(tmp_path / "probs.npy", mode="w+", dtype=np.float32, shape=(3, 70, 90))
    inferer = DenseInferer(tile_size=32, max_slab_voxels=None)
    assert inferer.predict_array(image, net, out=out) is out
    out.flush()
    saved = torch.from_numpy(np.load(tmp_path / "probs.npy"))
    torch.testing.assert_close(saved[None], DenseInferer()(x, net), rtol=0, atol=1e-5)
    in_memory = DenseInferer().predict_array(x[0].numpy(), net)  # out=None allocates
    torch.testing.assert_close(torch.from_numpy(in_memory), saved, rtol=0, atol=1e-5)
    raw = x[0].numpy() * 20.0 + 100.0  # normalised on the fly, tile by tile
    normalised = DenseInferer(tile_size=32).predict_array(raw, net, mean=[100.0], std=20.0)
    torch.testing.assert_close(torch.from_numpy(normalised), saved, rtol=0, atol=1e-4)


def test_predict_array_shards_split_the_tiles() -> None:
    """``shard=(i, n)``: each of ``n`` callers writes only its every ``n``-th tile, disjoint, and together they give
    the whole image (as ``torchrun`` ranks writing into one shared output do)."""
    np = pytest.importorskip("numpy")
    net = network(2)
    x = images((70, 90), batch=1, seed=4)[0].numpy()
    inferer = DenseInferer(tile_size=32, max_slab_voxels=None)
    whole = inferer.predict_array(x, net)
    out = np.full((3, 70, 90), np.nan, np.float32)
    covered = []
    for i in range(2):
        mine = np.full((3, 70, 90), np.nan, np.float32)
        inferer.predict_array(x, net, out=mine, shard=(i, 2))
        covered.append(~np.isnan(mine[0]))
        out[:, covered[-1]] = mine[:, covered[-1]]
    assert covered[0].any() and covered[1].any() and not (covered[0] & covered[1]).any()
    assert (covered[0] | covered[1]).all()
    np.testing.assert_array_equal(out, whole)
    with pytest.raises(ValueError, match="shard"):
        inferer.predict_array(x, net, shard=(2, 2))


def test_predict_array_and_tile_arguments_are_checked() -> None:
    net = network(2)
    np = pytest.importorskip("numpy")
    with pytest.raises(ValueError, match="out must have shape"):
        DenseInferer().predict_array(np.zeros((1, 20, 20), np.float32), net, out=np.zeros((2, 20, 20), np.float32))
    with pytest.raises(ValueError, match="expects"):
        DenseInferer().predict_array(np.zeros((20, 20), np.float32), net)
    with pytest.raises(ValueError, match="std must be positive"):
        DenseInferer().predict_array(np.zeros((1, 20, 20), np.float32), net, std=0.0)
    with pytest.raises(ValueError, match="tile_size"):
        DenseInferer(tile_size=0)
    with pytest.raises(ValueError, match="tile_size"):
        DenseInferer(tile_size=(16, -1))
    assert len(DenseInferer(tile_size=64).tiles(net, (40, 30))) == 1  # an image smaller than a tile is one tile


# ------------------------------------------------------------------ shapes, padding, arguments
@pytest.mark.parametrize("spatial", [(23, 19), (5, 7), (4, 4), (13, 9, 11), (4, 5, 6)], ids=str)
def test_output_shape_and_probabilities(spatial: tuple[int, ...]) -> None:
    """Odd sizes and images smaller than a training patch, batch of 2."""
    net = network(len(spatial))
    x = images(spatial, batch=2, seed=1)
    probs = DenseInferer()(x, net)
    assert probs.shape == (2, 3, *spatial) and probs.dtype == torch.float32 and probs.is_contiguous()
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones((2, *spatial)))
    assert not torch.equal(probs[0], probs[1])  # each image of the batch is its own prediction
    torch.testing.assert_close(DenseInferer()(x[1:], net)[0], probs[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("spatial", [(1, 1), (3, 9), (9, 2), (3, 9, 10), (6, 5, 1)], ids=str)
def test_sides_smaller_than_the_downsampling_factor(spatial: tuple[int, ...]) -> None:
    net = network(len(spatial))
    x = images(spatial, batch=1, seed=1)
    probs = DenseInferer()(x, net)
    assert probs.shape == (1, 3, *spatial)
    torch.testing.assert_close(probs.sum(1), torch.ones((1, *spatial)))


@pytest.mark.parametrize("spatial", [(5, 7), (4, 9, 10)], ids=str)
def test_small_image_falls_back_to_replicate(spatial: tuple[int, ...]) -> None:
    """An image side not larger than the padding cannot be reflected: it is replicated."""
    net = network(len(spatial))
    x = images(spatial, batch=1, seed=2)
    torch.testing.assert_close(DenseInferer()(x, net), DenseInferer(pad_mode="replicate")(x, net))


def test_pad_mode_matters_near_the_border_only(net2d: EpsSegHVAE) -> None:
    radius = DenseInferer().receptive_field(net2d)
    x = images((2 * radius + 3, 2 * radius + 2), batch=1, seed=2)
    reflect = DenseInferer()(x, net2d)
    inner = (slice(None), slice(None), slice(radius, -radius), slice(radius, -radius))
    for mode in ("replicate", "constant"):
        other = DenseInferer(pad_mode=mode)(x, net2d)
        assert (reflect - other).abs().max() > 1e-3
        torch.testing.assert_close(other[inner], reflect[inner], rtol=0, atol=1e-5)


def test_image_padding() -> None:
    """The extent of a training patch around its centre pixel, as seen by the head window."""
    net2, net3 = network(2), network(3)
    assert DenseInferer().image_padding(net2) == [(8, 4), (8, 4)]  # 16 px patch: window cells 0..3 of 4
    assert DenseInferer(patch_size=(20, 24)).image_padding(net2) == [(10, 2), (8, 4)]
    assert DenseInferer().image_padding(net3) == [(4, 0)] * 3
    assert DenseInferer(patch_size=12).image_padding(net3) == [(6, 0)] * 3  # window ends before the centre
    with pytest.raises(ValueError, match="divisible"):
        DenseInferer(patch_size=18).image_padding(net2)


def test_wrong_input_dimensions_raise(net2d: EpsSegHVAE) -> None:
    with pytest.raises(ValueError, match="2D network"):
        DenseInferer()(torch.zeros((1, 1, 9, 9, 9)), net2d)
    with pytest.raises(ValueError, match="2D network"):
        DenseInferer()(torch.zeros((1, 9, 9)), net2d)


def test_other_networks_are_refused() -> None:
    with pytest.raises(TypeError, match="PatchCenterInferer"):
        DenseInferer()(torch.zeros((1, 1, 9, 9)), nn.Conv2d(1, 3, 3))


def test_amp_auto_follows_the_device(net2d: EpsSegHVAE, monkeypatch: pytest.MonkeyPatch) -> None:
    """``amp="auto"`` computes in bfloat16 exactly when the device has native bfloat16, float32 otherwise."""
    import epsseg_monai.utils as utils

    x = images((24, 20), batch=1, seed=12)
    fp32 = DenseInferer(amp=False).logits(x, net2d)
    bf16 = DenseInferer(amp=True).logits(x, net2d)
    assert (fp32 - bf16).abs().max() > 1e-4  # the two precisions are distinguishable
    for fast, expected in ((True, bf16), (False, fp32)):
        monkeypatch.setattr(utils, "fast_bfloat16", lambda device, fast=fast: fast)
        torch.testing.assert_close(DenseInferer(amp="auto").logits(x, net2d), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="amp"):
        DenseInferer(amp="bf16")


def test_bad_max_slab_voxels() -> None:
    with pytest.raises(ValueError, match="max_slab_voxels"):
        DenseInferer(max_slab_voxels=0)


def test_mask_is_accepted_and_ignored(net2d: EpsSegHVAE) -> None:
    x = images((11, 12), seed=4)
    mask = torch.zeros((2, 11, 12), dtype=torch.bool)
    mask[:, 3, 4] = True
    probs = DenseInferer()(x, net2d, mask=mask)
    torch.testing.assert_close(probs, DenseInferer()(x, net2d))
    assert (probs.sum(1) > 0.99).all()  # every pixel predicted, not only the mask


def test_wrapped_network_and_progress_bar(net2d: EpsSegHVAE) -> None:
    x = images((11, 12), seed=4)
    expected = DenseInferer()(x, net2d)
    wrapped = nn.DataParallel(net2d)  # a ``.module`` wrapper (on CPU it simply holds the network)
    torch.testing.assert_close(DenseInferer()(x, wrapped), expected)
    torch.testing.assert_close(DenseInferer(progress=True)(x, net2d), expected)


# ------------------------------------------------------------------ network state
def test_network_state_is_restored() -> None:
    net = network(2).train()
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    x = images((19, 17), seed=6)
    probs = DenseInferer()(x, net)
    # evaluated in eval mode: dropout off, running statistics used and left untouched
    torch.testing.assert_close(probs, DenseInferer()(x, network(2)))
    for k, v in net.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), k
    assert net.training and all(m.training for m in net.modules())
    for name, p in net.named_parameters():
        assert p.is_contiguous(), name
    out = net(images((16, 16), seed=8))  # a training forward and backward still work
    assert isinstance(out, dict) and out["logits"].shape == (2, 3)
    out["logits"].sum().backward()
    assert all(p.grad is not None for p in net.head.parameters())
    # an eval-mode network stays in eval mode
    net.eval()
    DenseInferer()(x, net)
    assert not net.training and all(p.is_contiguous() for p in net.parameters())


# ------------------------------------------------------------------ receptive field
def test_receptive_field_of_the_network_is_tight(net2d: EpsSegHVAE) -> None:
    """A pixel change reaches outputs up to ``receptive_field`` pixels away, and none farther."""
    inferer = DenseInferer(max_slab_voxels=256)
    radius = inferer.receptive_field(net2d)
    assert radius == 34  # stem 4, level 1: 2 + 2 x 2, level 2: 2 x 2 + 4 x 2, posterior 4 x 1, window offset 8
    size = 2 * radius + 9
    x = images((size, size), batch=1, seed=9)
    q = (size // 2, size // 2 + 1)  # farther than radius + padding from every border
    changed = x.clone()
    changed[0, 0, q[0], q[1]] += 20.0
    diff = (inferer.logits(changed, net2d) - inferer.logits(x, net2d)).abs().amax(1)[0]
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    distance = torch.maximum((rows - q[0]).abs(), (cols - q[1]).abs())
    assert diff[distance > radius].max() <= 1e-6
    assert diff[distance == radius].max() > 1e-5  # >10x the float noise of the comparisons above
    assert diff[distance <= radius].max() > 0.1


# ------------------------------------------------------------------ class_entropy
def test_class_entropy_extremes_and_shape() -> None:
    for k in (2, 3, 7):
        uniform = torch.full((2, k, 4, 5), 1.0 / k)
        ent = class_entropy(uniform)
        assert ent.shape == (2, 1, 4, 5)
        torch.testing.assert_close(ent, torch.ones_like(ent))
        torch.testing.assert_close(class_entropy(uniform, normalize=False), torch.full_like(ent, math.log(k)))
    one_hot = F.one_hot(torch.randint(0, 3, (2, 4, 5, 6)), 3).movedim(-1, 1).float()
    ent = class_entropy(one_hot)
    assert ent.shape == (2, 1, 4, 5, 6)
    assert torch.equal(ent, torch.zeros_like(ent))


def test_class_entropy_values_and_axis() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.7, 0.2, 0.1]])  # classes on the last axis
    ent = class_entropy(probs, dim=-1)
    assert ent.shape == (2, 1)
    expected = torch.tensor(
        [
            [math.log(2) / math.log(3)],
            [-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)],
        ]
    )
    torch.testing.assert_close(ent, expected)
    random = torch.softmax(torch.randn((3, 4, 8, 8)), dim=1)
    ent = class_entropy(random)
    assert ((ent > 0) & (ent < 1)).all()
    assert torch.equal(class_entropy(torch.ones((2, 1, 3))), torch.zeros((2, 1, 3)))  # one class: no division
