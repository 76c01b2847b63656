from __future__ import annotations

import numpy as np
import pytest
import torch

from epsseg_monai.transforms import CenterRegionMask, CenterRegionMaskD, CenterRegionMaskd, CenterRegionMaskDict
from epsseg_monai.utils import center_region_slices


@pytest.mark.parametrize("spatial", [(16, 16), (9, 10, 11)])
@pytest.mark.parametrize("mask_size", [1, 3])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_zero_fill_changes_exactly_the_centre(spatial, mask_size, as_tensor):
    img = np.random.default_rng(0).uniform(1, 2, size=(2, *spatial)).astype(np.float32)
    data = torch.as_tensor(img) if as_tensor else img
    out = CenterRegionMask(mask_size)(data)
    assert type(out) is type(data)
    out = np.asarray(out)
    changed = out != img
    expected = np.zeros_like(changed)
    expected[(slice(None),) + center_region_slices(spatial, mask_size)] = True
    np.testing.assert_array_equal(changed, expected)
    assert np.all(out[expected] == 0)
    # the input is not modified
    assert np.all(np.asarray(data) == img)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_ring_mean_fill(as_tensor):
    img = np.arange(2 * 7 * 7, dtype=np.float32).reshape(2, 7, 7)
    data = torch.as_tensor(img) if as_tensor else img
    out = np.asarray(CenterRegionMask(1, fill="ring_mean", ring_width=1)(data))
    for c in range(2):
        ring = img[c, 2:5, 2:5].copy()
        expected = (ring.sum() - ring[1, 1]) / 8
        assert out[c, 3, 3] == pytest.approx(expected)
    other = np.ones_like(img, dtype=bool)
    other[:, 3, 3] = False
    np.testing.assert_array_equal(out[other], img[other])


def test_ring_mean_falls_back_to_whole_patch_when_ring_does_not_fit():
    img = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    out = CenterRegionMask(1, fill="ring_mean", ring_width=5)(img)
    assert out[0, 1, 1] == pytest.approx((img.sum() - 4) / 8)


def test_mask_errors():
    with pytest.raises(ValueError, match="fill"):
        CenterRegionMask(fill="noise")
    with pytest.raises(ValueError, match="does not fit"):
        CenterRegionMask(5)(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="channel-first"):
        CenterRegionMask(1)(np.zeros(4))


def test_dictionary_version_keeps_unmasked_and_mask():
    img = torch.rand(1, 8, 8) + 1
    d = CenterRegionMaskd("image", mask_size=2, unmasked_keys="target", mask_key="mask")({"image": img, "other": 1})
    assert torch.equal(d["target"], img)
    assert d["other"] == 1
    assert d["mask"].shape == (1, 8, 8) and int(d["mask"].sum()) == 4
    assert torch.all(d["image"][d["mask"]] == 0)
    assert torch.equal(d["image"][~d["mask"]], img[~d["mask"]])
    assert CenterRegionMaskD is CenterRegionMaskDict is CenterRegionMaskd


def test_dictionary_missing_keys():
    with pytest.raises(KeyError):
        CenterRegionMaskd("image")({"label": np.zeros((1, 4, 4))})
    out = CenterRegionMaskd("image", allow_missing_keys=True)({"label": np.zeros((1, 4, 4))})
    assert set(out) == {"label"}
