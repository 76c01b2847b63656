"""Tests of ``epsseg_monai.inferers.dihedral``: test-time augmentation over the 8 rotations and flips."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import Inferer

from epsseg_monai.inferers import DenseInferer, DihedralInferer, PatchCenterInferer, dihedral_transforms
from tests.inferers.test_dense import CASES, network


class _ApplyNetwork(Inferer):
    """Calls the network on the whole input (the simplest per-pixel inferer)."""

    def __call__(self, inputs, network, *args, **kwargs):
        return network(inputs)


def _row_ramp(x: torch.Tensor) -> torch.Tensor:
    """An orientation-dependent 'network': class 0 grows down the rows, class 1 is its complement."""
    ramp = torch.arange(x.shape[-2], dtype=x.dtype).view(-1, 1).expand(x.shape[-2:]) / (x.shape[-2] - 1)
    ramp = ramp.expand(x.shape[0], 1, *x.shape[2:])
    return torch.cat([ramp, 1 - ramp], dim=1) + x * 0


def test_transforms_are_the_eight_distinct_symmetries():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    seen = set()
    for k, flip in dihedral_transforms():
        y = torch.rot90(x, k, dims=(-2, -1))
        y = y.flip(-1) if flip else y
        seen.add(tuple(y.flatten().tolist()) + tuple(y.shape))
    assert len(dihedral_transforms()) == 8 and len(seen) == 8
    assert dihedral_transforms()[0] == (0, False)


def test_average_over_orientations_by_hand():
    """The mean of the row ramp over the 8 symmetries of a square is computed by hand: every orientation of
    the ramp (down, up, right, left, twice each) is undone, so the result is the mean of the 4 ramps."""
    x = torch.zeros(1, 1, 5, 5)
    out = DihedralInferer(_ApplyNetwork())(x, _row_ramp)
    r = torch.arange(5.0) / 4
    down, right = r.view(-1, 1).expand(5, 5), r.view(1, -1).expand(5, 5)
    expected0 = (down + (1 - down) + right + (1 - right)) / 4  # == 0.5 everywhere
    torch.testing.assert_close(out[0, 0], expected0)
    assert not torch.allclose(_row_ramp(x)[0, 0], expected0), "the check would not see a missing inverse"


def test_equivariant_network_is_unchanged():
    """A per-pixel network commutes with every rotation and flip: TTA returns its output unchanged."""
    x = torch.randn(2, 1, 6, 9)
    per_pixel = lambda t: torch.cat([t.sigmoid(), 1 - t.sigmoid()], 1)  # noqa: E731
    torch.testing.assert_close(DihedralInferer(_ApplyNetwork())(x, per_pixel), per_pixel(x))


@pytest.mark.parametrize("dims", [2, 3])
def test_dense_tta_is_exactly_equivariant(dims):
    """Whatever the network, the average over the group commutes with a quarter turn of the input (a group
    property); the plain dense prediction of the same network does not."""
    net = network(dims)
    dense = DenseInferer(CASES[dims][0])
    tta = DihedralInferer(dense)
    shape = (1, 1, 10, 11) if dims == 2 else (1, 1, 5, 7, 6)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    turned = torch.rot90(x, 1, dims=(-2, -1))
    out = tta(x, net)
    assert out.shape == (1, 3, *shape[2:])
    torch.testing.assert_close(out.sum(1), torch.ones_like(out[:, 0]))
    torch.testing.assert_close(tta(turned, net), torch.rot90(out, 1, dims=(-2, -1)), atol=1e-5, rtol=1e-5)
    plain = dense(x, net)
    assert not torch.allclose(dense(turned, net), torch.rot90(plain, 1, dims=(-2, -1)), atol=1e-3)


def test_random_pixel_subsets_are_refused():
    net = network(2)
    x = torch.randn(1, 1, 12, 12)
    with pytest.raises(ValueError, match="every pixel predicted"):
        DihedralInferer(PatchCenterInferer(CASES[2][0], num_pixels=20))(x, net)


def test_non_map_outputs_and_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="per-pixel maps"):
        DihedralInferer(_ApplyNetwork())(torch.zeros(1, 1, 4, 4), lambda t: t.mean((2, 3)))
    with pytest.raises(ValueError, match="spatial axes"):
        DihedralInferer(_ApplyNetwork())(torch.zeros(1, 4), lambda t: t)
