"""Tests of ``RandNeighbourPatch(d)``: anchors on labelled pixels plus unlabelled neighbours within a radius."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd

from epsseg_monai.transforms import (
    RandNeighbourPatch,
    RandNeighbourPatchD,
    RandNeighbourPatchd,
    RandNeighbourPatchDict,
    RandSparseLabelPatch,
    neighbour_offsets,
)


def point_labels(spatial, points_per_class=1, num_classes=3, seed=0):
    """An image whose value is the flat pixel index, and true point annotations (a few isolated pixels)."""
    rng = np.random.default_rng(seed)
    image = np.arange(np.prod(spatial), dtype=np.float32).reshape(1, *spatial)
    label = np.zeros((1, *spatial), dtype=np.uint8)
    flat = rng.choice(np.prod(spatial), size=points_per_class * num_classes, replace=False)
    for i, idx in enumerate(flat):
        label.flat[idx] = 1 + i % num_classes
    return image, label


def groups(sampler: RandNeighbourPatch):
    k = 1 + sampler.num_neighbours
    return [
        (sampler.centers[i], sampler.classes[i], sampler.centers[i + 1 : i + k], sampler.classes[i + 1 : i + k])
        for i in range(0, len(sampler.centers), k)
    ]


def test_aliases():
    assert RandNeighbourPatchD is RandNeighbourPatchDict is RandNeighbourPatchd


@pytest.mark.parametrize(
    "radius, dims, distance, count",
    [(5, 2, "euclidean", 80), (5, 2, "chebyshev", 120), (1, 3, "euclidean", 6), (1, 3, "chebyshev", 26)],
)
def test_offsets(radius, dims, distance, count):
    offsets = neighbour_offsets(radius, dims, distance)
    assert offsets.shape == (count, dims)
    assert not np.any(np.all(offsets == 0, axis=1)), "the anchor itself is not a neighbour"
    assert len({tuple(o) for o in offsets}) == count
    if distance == "euclidean":
        assert ((offsets**2).sum(1) <= radius**2).all()
    else:
        assert (np.abs(offsets).max(1) <= radius).all()


@pytest.mark.parametrize("spatial, patch", [((40, 50), 16), ((14, 16, 18), 8)])
@pytest.mark.parametrize("distance", ["euclidean", "chebyshev"])
def test_neighbours_of_true_point_labels_are_unlabelled_pixels_within_radius(spatial, patch, distance):
    image, label = point_labels(spatial)
    sampler = RandNeighbourPatch(patch, num_samples=6, num_neighbours=7, radius=3, distance=distance)
    sampler.set_random_state(0)
    patches = sampler(image, label)
    assert len(patches) == len(sampler.centers) == len(sampler.classes) == len(sampler.anchors) == 6 * 8
    assert sampler.anchors == ([True] + [False] * 7) * 6
    centre = (0,) + (patch // 2,) * len(spatial)
    for p, c in zip(patches, sampler.centers):
        assert p.shape == (1,) + (patch,) * len(spatial)
        assert p[centre] == np.ravel_multi_index(c, spatial), "the patch is centred on its pixel"
    for anchor, cls, neighbours, neighbour_classes in groups(sampler):
        assert label[(0,) + anchor] == cls != 0
        assert neighbour_classes == [0] * 7
        assert len(set(neighbours)) == 7, "distinct neighbours while the neighbourhood is big enough"
        offsets = np.asarray(neighbours) - np.asarray(anchor)
        assert np.any(offsets != 0, axis=1).all()
        if distance == "euclidean":
            assert ((offsets**2).sum(1) <= 9).all()
        else:
            assert (np.abs(offsets).max(1) <= 3).all()
        # with single-pixel annotations every neighbour is an unlabelled pixel (the reference code finds none)
        assert all(label[(0,) + n] == 0 for n in neighbours)
        assert all(0 <= v < s for n in neighbours for v, s in zip(n, spatial))


def test_neighbourhood_is_covered_uniformly():
    image, label = point_labels((30, 30))
    label[:] = 0
    label[0, 15, 15] = 1
    sampler = RandNeighbourPatch(4, num_samples=1, num_neighbours=4, radius=2).set_random_state(0)
    seen = set()
    for _ in range(200):
        sampler(image, label)
        seen.update(sampler.centers[1:])
    assert seen == {(15 + dy, 15 + dx) for dy, dx in neighbour_offsets(2, 2)}


def test_radius_can_change_between_calls():
    image, label = point_labels((60, 60))
    sampler = RandNeighbourPatch(8, num_samples=4, num_neighbours=7, radius=1).set_random_state(0)
    sampler(image, label)
    offsets = [np.subtract(n, a) for a, _, ns, _ in groups(sampler) for n in ns]
    assert max(np.abs(o).max() for o in offsets) == 1
    sampler.radius = 9
    reach = 0
    for _ in range(5):
        sampler(image, label)
        offsets = [np.subtract(n, a) for a, _, ns, _ in groups(sampler) for n in ns]
        assert max((o**2).sum() for o in offsets) <= 81
        reach = max(reach, max(np.abs(o).max() for o in offsets))
    assert reach > 1
    with pytest.raises(ValueError, match="radius"):
        sampler.radius = 0


def test_border_and_small_neighbourhoods():
    """At a corner only in-image pixels are neighbours; with fewer than ``num_neighbours`` they repeat."""
    image, label = point_labels((10, 12))
    label[:] = 0
    label[0, 0, 0] = 2
    sampler = RandNeighbourPatch(6, num_samples=2, num_neighbours=7, radius=1).set_random_state(0)
    patches = sampler(image, label)
    assert len(patches) == 16
    for _, cls, neighbours, _ in groups(sampler):
        assert cls == 2
        assert set(neighbours) == {(0, 1), (1, 0)}


def test_without_neighbours_equals_the_anchor_sampler():
    image, label = point_labels((40, 50), points_per_class=5)
    plain = RandSparseLabelPatch(8, num_samples=9).set_random_state(3)
    with_none = RandNeighbourPatch(8, num_samples=9, num_neighbours=0).set_random_state(3)
    for a, b in zip(plain(image, label), with_none(image, label)):
        np.testing.assert_array_equal(a, b)
    assert plain.centers == with_none.centers and with_none.anchors == [True] * 9


def test_same_seed_same_patches_and_bad_arguments():
    image, label = point_labels((40, 50))
    a = RandNeighbourPatch(8, num_samples=3).set_random_state(5)
    b = RandNeighbourPatch(8, num_samples=3).set_random_state(5)
    a(image, label)
    b(image, label)
    assert a.centers == b.centers
    with pytest.raises(ValueError, match="num_neighbours"):
        RandNeighbourPatch(8, num_neighbours=-1)
    with pytest.raises(ValueError, match="chessboard"):
        RandNeighbourPatch(8, distance="chessboard")


@pytest.mark.parametrize("spatial, patch", [((40, 50), 16), ((14, 16, 18), 8)])
def test_dict_version(spatial, patch):
    image, label = point_labels(spatial)
    t = RandNeighbourPatchd(["image", "label"], "label", patch, num_samples=3, num_neighbours=2, radius=2)
    t.set_random_state(0)
    out = t({"image": torch.as_tensor(image), "label": torch.as_tensor(label), "name": "x"})
    assert len(out) == 9
    centre = (0,) + (patch // 2,) * len(spatial)
    for i, d in enumerate(out):
        is_anchor = i % 3 == 0
        assert d["anchor"].dtype == torch.bool and bool(d["anchor"]) == is_anchor
        assert d["name"] == "x"
        c = tuple(d["center"].tolist())
        assert d["image"][centre] == np.ravel_multi_index(c, spatial)
        assert d["label"][centre] == label[(0,) + c], "the label map is cropped around the same centre"
        assert int(d["class"]) == (label[(0,) + c] if is_anchor else 0)
    assert t.radius == 2
    t.radius = 4
    assert t.sampler.radius == 4


def test_dict_version_in_a_pipeline():
    """Anchor flags, classes and patches collate into one batch of ``num_samples * (1 + num_neighbours)``."""
    image, label = point_labels((40, 50))
    t = RandNeighbourPatchd(["image", "label"], "label", 16, num_samples=2, num_neighbours=3, anchor_key="is_anchor")
    pipeline = Compose([t, RandFlipd(["image", "label"], prob=0.5, spatial_axis=0)]).set_random_state(0)
    loader = DataLoader(Dataset([{"image": image, "label": label}], transform=pipeline), batch_size=1)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 1, 16, 16)
    assert batch["is_anchor"].tolist() == [True, False, False, False] * 2
    assert (batch["class"][~batch["is_anchor"]] == 0).all() and (batch["class"][batch["is_anchor"]] > 0).all()
