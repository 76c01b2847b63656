"""Tests of ``epsseg_monai.transforms.sparse_split``: seeded, class-stratified hold-out of sparse points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from epsseg_monai.transforms import (
    SplitSparseLabels,
    SplitSparseLabelsD,
    SplitSparseLabelsd,
    SplitSparseLabelsDict,
)


def sparse_label(counts: tuple[int, ...] = (1, 7, 20, 40), spatial: tuple[int, ...] = (30, 31), seed: int = 0):
    """A ``(1, *spatial)`` uint8 sparse label map with ``counts[c - 1]`` points of class ``c``."""
    rng = np.random.default_rng(seed)
    label = np.zeros((1, *spatial), dtype=np.uint8)
    flat = rng.choice(int(np.prod(spatial)), size=sum(counts), replace=False)
    start = 0
    for cls, n in enumerate(counts, start=1):
        label.flat[flat[start : start + n]] = cls
        start += n
    return label


def split(label, fraction: float, seed: int = 0):
    return (
        np.asarray(SplitSparseLabels(fraction, "train", seed)(label)),
        np.asarray(SplitSparseLabels(fraction, "val", seed)(label)),
    )


@pytest.mark.parametrize("spatial", [(30, 31), (6, 7, 8)])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9])
def test_parts_are_disjoint_and_cover_the_input(spatial: tuple[int, ...], fraction: float) -> None:
    label = sparse_label(spatial=spatial)
    train, val = split(label, fraction)
    assert train.shape == val.shape == label.shape
    assert not ((train > 0) & (val > 0)).any()
    np.testing.assert_array_equal(train + val, label)  # union, each point with its own class
    assert (val > 0).any() and (train > 0).any()


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_per_class_counts(fraction: float) -> None:
    counts = (1, 7, 20, 40)
    label = sparse_label(counts)
    train, val = split(label, fraction)
    for cls, n in enumerate(counts, start=1):
        expected_val = 0 if n == 1 else math.ceil(fraction * n)
        assert int((val == cls).sum()) == expected_val, cls
        assert int((train == cls).sum()) == n - expected_val, cls


def test_class_with_one_point_stays_in_train() -> None:
    label = sparse_label((1, 1, 5))
    train, val = split(label, 0.9)
    assert int((train == 1).sum()) == 1 and int((train == 2).sum()) == 1
    assert not (val == 1).any() and not (val == 2).any()


def test_every_class_keeps_a_training_point() -> None:
    """Where ``ceil(fraction * n) == n`` one point of the class still stays in training."""
    label = sparse_label((2, 3, 10))
    train, val = split(label, 0.95)
    for cls, n in enumerate((2, 3, 10), start=1):
        assert int((train == cls).sum()) == 1
        assert int((val == cls).sum()) == n - 1


def test_deterministic_across_instances_and_calls() -> None:
    label = sparse_label()
    first = SplitSparseLabels(0.3, "val", seed=5)
    again = SplitSparseLabels(0.3, "val", seed=5)
    np.testing.assert_array_equal(first(label), again(label))
    np.testing.assert_array_equal(first(label), first(label))  # not dependent on call order
    np.testing.assert_array_equal(first.held_out(label), again.held_out(label))


def test_seeds_give_different_splits() -> None:
    label = sparse_label()
    held = [SplitSparseLabels(0.3, seed=s).held_out(label) for s in range(3)]
    assert not np.array_equal(held[0], held[1])
    assert not np.array_equal(held[1], held[2])
    # same number of points held out per class whatever the seed
    for h in held[1:]:
        for cls in range(1, 5):
            assert int(h[label == cls].sum()) == int(held[0][label == cls].sum())


def test_held_out_mask() -> None:
    label = sparse_label()
    held = SplitSparseLabels(0.25).held_out(label)
    assert held.dtype == bool and held.shape == label.shape
    assert not held[label == 0].any()
    np.testing.assert_array_equal(np.asarray(SplitSparseLabels(0.25, "val")(label)) > 0, held)


@pytest.mark.parametrize("part", ["train", "val"])
def test_fraction_zero_is_identity(part: str) -> None:
    label = sparse_label()
    tensor = torch.as_tensor(label)
    assert SplitSparseLabels(0.0, part)(label) is label
    assert SplitSparseLabels(0.0, part)(tensor) is tensor
    assert not SplitSparseLabels(0.0).held_out(label).any()


def test_numpy_and_torch_agree_and_keep_type() -> None:
    label = sparse_label()
    out_np = SplitSparseLabels(0.3, "train", seed=2)(label)
    out_t = SplitSparseLabels(0.3, "train", seed=2)(torch.as_tensor(label))
    assert isinstance(out_np, np.ndarray) and out_np.dtype == label.dtype
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.uint8
    np.testing.assert_array_equal(out_t.numpy(), out_np)
    assert not np.array_equal(out_np, label)


def test_float_metatensor_keeps_values_and_meta() -> None:
    """Labels loaded by ``LoadImage`` are float MetaTensors; the file name must survive for later checks."""
    label = sparse_label()
    meta_label = MetaTensor(torch.as_tensor(label, dtype=torch.float32), meta={"filename_or_obj": "/x/lab.tif"})
    out = SplitSparseLabels(0.3, "val", seed=1)(meta_label)
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32
    assert out.meta["filename_or_obj"] == "/x/lab.tif"
    np.testing.assert_array_equal(out.numpy(), np.asarray(SplitSparseLabels(0.3, "val", seed=1)(label)))


def test_input_is_not_modified() -> None:
    label = sparse_label()
    copy = label.copy()
    tensor = torch.as_tensor(label.copy())
    SplitSparseLabels(0.5, "train")(label)
    SplitSparseLabels(0.5, "val")(tensor)
    np.testing.assert_array_equal(label, copy)
    np.testing.assert_array_equal(tensor.numpy(), copy)


@pytest.mark.parametrize("cls", [SplitSparseLabelsd, SplitSparseLabelsD, SplitSparseLabelsDict])
def test_dictionary_version(cls: type) -> None:
    label = sparse_label()
    image = np.random.default_rng(0).normal(size=label.shape).astype(np.float32)
    data = {"image": image, "label": label, "other": label}
    train = cls(keys="label", fraction=0.3, part="train", seed=4)(data)
    val = cls(keys="label", fraction=0.3, part="val", seed=4)(data)
    np.testing.assert_array_equal(train["label"], SplitSparseLabels(0.3, "train", 4)(label))
    np.testing.assert_array_equal(val["label"], SplitSparseLabels(0.3, "val", 4)(label))
    assert train["image"] is image and train["other"] is label  # other keys untouched
    assert data["label"] is label  # the input dict is not modified
    with pytest.raises(KeyError):
        cls(keys="missing", fraction=0.3)(data)
    assert cls(keys="missing", fraction=0.3, allow_missing_keys=True)(data)["label"] is label


def test_aliases() -> None:
    assert SplitSparseLabelsD is SplitSparseLabelsd and SplitSparseLabelsDict is SplitSparseLabelsd


@pytest.mark.parametrize("kwargs", [{"fraction": 1.0}, {"fraction": -0.1}, {"fraction": 0.2, "part": "test"}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SplitSparseLabels(**kwargs)
    with pytest.raises(ValueError):
        SplitSparseLabelsd(keys="label", **kwargs)
