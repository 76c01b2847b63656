from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose

from epsseg_monai.transforms import (
    RandSparseLabelPatch,
    RandSparseLabelPatchD,
    RandSparseLabelPatchd,
    RandSparseLabelPatchDict,
    extract_patch,
)


def sparse_data(spatial=(40, 50), counts=(3, 20, 7), seed=0):
    """An image whose value encodes the pixel's flat index, and a sparse label map with ``counts`` points per class."""
    rng = np.random.default_rng(seed)
    image = np.arange(np.prod(spatial), dtype=np.float32).reshape(1, *spatial)
    label = np.zeros((1, *spatial), dtype=np.uint8)
    flat = rng.choice(np.prod(spatial), size=sum(counts), replace=False)
    start = 0
    for cls, n in enumerate(counts, start=1):
        label.flat[flat[start : start + n]] = cls
        start += n
    return image, label


@pytest.mark.parametrize("spatial", [(40, 50), (12, 14, 16)])
def test_patch_centres_are_labelled_pixels_with_their_class(spatial):
    image, label = sparse_data(spatial, counts=(5, 5, 5))
    patch = 8 if len(spatial) == 3 else 16
    sampler = RandSparseLabelPatch(patch, num_samples=30)
    sampler.set_random_state(1)
    patches = sampler(image, label)
    assert len(patches) == 30
    centre = (0,) + (patch // 2,) * len(spatial)
    for p, c, cls in zip(patches, sampler.centers, sampler.classes):
        assert p.shape == (1,) + (patch,) * len(spatial)
        assert label[(0,) + c] == cls != 0
        # the image value at the patch centre is the flat index of the labelled pixel
        assert p[centre] == np.ravel_multi_index(c, spatial)


def test_class_balance():
    image, label = sparse_data(counts=(3, 200, 20))
    sampler = RandSparseLabelPatch(8, num_samples=99, class_balanced=True).set_random_state(0)
    sampler(image, label)
    assert Counter(sampler.classes) == {1: 33, 2: 33, 3: 33}
    unbalanced = RandSparseLabelPatch(8, num_samples=600, class_balanced=False).set_random_state(0)
    unbalanced(image, label)
    counts = Counter(unbalanced.classes)
    assert counts[2] > 4 * counts[3] > 4 * counts[1] / 2  # follows the label frequencies 3 : 200 : 20


def test_same_seed_same_patches():
    image, label = sparse_data()
    a = RandSparseLabelPatch(8, num_samples=10).set_random_state(42)
    b = RandSparseLabelPatch(8, num_samples=10).set_random_state(42)
    pa, pb = a(image, label), b(image, label)
    assert a.centers == b.centers
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb))
    c = RandSparseLabelPatch(8, num_samples=10).set_random_state(43)
    c(image, label)
    assert c.centers != a.centers


def test_border_patches_are_padded_not_shifted():
    image = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    label = np.zeros((1, 10, 10), dtype=np.uint8)
    label[0, 0, 9] = 2
    sampler = RandSparseLabelPatch(8, num_samples=2)
    patches = sampler(image, label)
    assert sampler.centers == [(0, 9), (0, 9)] and sampler.classes == [2, 2]
    p = patches[0]
    assert p.shape == (1, 8, 8) and p[0, 4, 4] == 9
    np.testing.assert_array_equal(p[0, 4:, :5], image[0, :4, 5:])  # inside the image: the image itself
    assert p[0, 3, 4] == image[0, 1, 9]  # reflected across row 0
    assert p[0, 4, 5] == image[0, 0, 8]  # reflected across column 9


def test_extract_patch_larger_than_image_and_torch():
    img = torch.arange(9.0).reshape(1, 3, 3)
    p = extract_patch(img, (1, 1), (9, 9))
    assert isinstance(p, torch.Tensor) and p.shape == (1, 9, 9) and p[0, 4, 4] == 4
    q = extract_patch(img, (1, 1), (3, 3))
    q[0, 0, 0] = 100  # a copy, not a view of the image
    assert img[0, 0, 0] == 0


@pytest.mark.parametrize(
    "label, match",
    [
        (np.zeros((1, 10, 10), dtype=np.uint8), "no labelled pixel"),
        (np.full((1, 10, 10), 9, dtype=np.uint8), "class id 9"),
        (np.full((1, 10, 10), np.nan, dtype=np.float32), "NaN"),
        (np.ones((1, 10, 11), dtype=np.uint8), "spatial shape"),
        (np.ones((2, 10, 10), dtype=np.uint8), "spatial shape"),
    ],
)
def test_sampler_errors(label, match):
    with pytest.raises(ValueError, match=match):
        RandSparseLabelPatch(4, num_classes=4)(np.zeros((1, 10, 10), dtype=np.float32), label)


def test_non_finite_image_values_are_refused():
    image, label = sparse_data(counts=(1, 1, 1))
    image[0, 0, 0] = np.nan
    sampler = RandSparseLabelPatch(200, num_samples=1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        sampler(image, label)
    with pytest.raises(ValueError, match="NaN or infinite"):
        sampler(torch.as_tensor(image), label)


def test_dictionary_version():
    image, label = sparse_data(counts=(4, 4, 4))
    t = RandSparseLabelPatchd(["image", "label"], label_key="label", patch_size=16, num_samples=6).set_random_state(3)
    out = t({"image": image, "label": label, "name": "x"})
    assert len(out) == 6
    for d in out:
        assert d["image"].shape == (1, 16, 16) and d["label"].shape == (1, 16, 16)
        assert d["class"].dtype == torch.long and d["class"].ndim == 0
        assert int(d["label"][0, 8, 8]) == int(d["class"]) == int(label[(0, *d["center"].tolist())])
        assert d["name"] == "x"
    assert RandSparseLabelPatchD is RandSparseLabelPatchDict is RandSparseLabelPatchd
    with pytest.raises(KeyError, match="label"):
        t({"image": image})


def test_dictionary_version_in_a_cached_pipeline_is_random_and_seedable():
    image, label = sparse_data(counts=(10, 10, 10))
    data = [{"image": image, "label": label}]

    def centres(seed):
        # MONAI's DataLoader reseeds the transforms from torch's generator (monai.utils.set_determinism)
        torch.manual_seed(seed)
        t = Compose([RandSparseLabelPatchd("image", "label", 8, num_samples=4)])
        ds = CacheDataset(data, t, progress=False)
        loader = DataLoader(ds, batch_size=4, num_workers=0)
        return [tuple(map(tuple, b["center"].tolist())) for _ in range(2) for b in loader]

    first = centres(5)
    assert first[0] != first[1]  # not cached: each epoch draws new patches
    assert centres(5) == first
    assert centres(6) != first
    batch = next(
        iter(
            DataLoader(
                CacheDataset(data, RandSparseLabelPatchd("image", "label", 8, num_samples=4), progress=False),
                batch_size=4,
            )
        )
    )
    assert batch["image"].shape == (4, 1, 8, 8) and batch["class"].shape == (4,)


def test_real_sparse_annotations(data_dir):
    tifffile = pytest.importorskip("tifffile")
    raw = tifffile.imread(data_dir / "vnc" / "raw" / "00.tif")[None].astype(np.float32)
    sparse = tifffile.imread(data_dir / "vnc" / "sparse_0.05pct" / "00.tif")[None]
    sampler = RandSparseLabelPatch(64, num_samples=64, num_classes=4).set_random_state(0)
    patches = sampler(raw, sparse)
    assert Counter(sampler.classes) == {1: 16, 2: 16, 3: 16, 4: 16}
    for p, c in zip(patches, sampler.centers):
        assert p[0, 32, 32] == raw[(0,) + c] and sparse[(0,) + c] > 0
