"""Tests of ``epsseg_monai.transforms.checks.CheckInputsd``: bad inputs are refused with the file's name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from epsseg_monai.transforms import CheckInputsD, CheckInputsd, CheckInputsDict

IMG = "/x/img.tif"
LAB = "/x/lab.tif"


def image(shape: tuple[int, ...] = (1, 6, 7), value: float | None = None) -> MetaTensor:
    arr = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    if value is not None:
        arr.view(-1)[3] = value
    return MetaTensor(arr, meta={"filename_or_obj": IMG})


def label(shape: tuple[int, ...] = (1, 6, 7), points: dict[tuple[int, ...], float] | None = None) -> MetaTensor:
    arr = torch.zeros(shape, dtype=torch.float32)
    for idx, v in (points if points is not None else {(0, 1, 2): 1.0, (0, 4, 5): 3.0}).items():
        arr[idx] = v
    return MetaTensor(arr, meta={"filename_or_obj": LAB})


def check(**kwargs) -> CheckInputsd:
    defaults = {"keys": "image", "spatial_dims": 2, "in_channels": 1, "label_key": "label", "num_classes": 3}
    return CheckInputsd(**{**defaults, **kwargs})


@pytest.mark.parametrize("cls", [CheckInputsd, CheckInputsD, CheckInputsDict])
def test_valid_data_pass_unchanged(cls: type) -> None:
    img, lab = image(), label()
    extra = object()
    data = {"image": img, "label": lab, "extra": extra}
    out = cls(keys="image", spatial_dims=2, in_channels=1, label_key="label", num_classes=3)(data)
    assert out == data and out is not data
    assert out["image"] is img and out["label"] is lab and out["extra"] is extra


def test_valid_volume_multichannel_and_numpy_pass() -> None:
    img = np.random.default_rng(0).normal(size=(2, 4, 5, 6)).astype(np.float32)
    lab = np.zeros((1, 4, 5, 6), dtype=np.uint8)
    lab[0, 1, 2, 3] = 2
    out = check(spatial_dims=3, in_channels=2, num_classes=2)({"image": img, "label": lab})
    assert out["image"] is img and out["label"] is lab


def test_inference_without_label_key() -> None:
    img = image()
    assert CheckInputsd("image", spatial_dims=2, in_channels=1)({"image": img})["image"] is img


@pytest.mark.parametrize("shape", [(6, 7), (1, 4, 6, 7), (1, 2, 3, 4, 5)])
def test_wrong_spatial_dims(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=f"{IMG}: shape .* is not a 2D image"):
        check()({"image": image(shape), "label": label()})


def test_2d_image_for_3d_model() -> None:
    with pytest.raises(ValueError, match=f"{IMG}: .* not a 3D image"):
        check(spatial_dims=3)({"image": image(), "label": label()})


def test_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match=f"{IMG} has 3 channel\\(s\\) but the network expects in_channels=1"):
        check()({"image": image((3, 6, 7)), "label": label()})
    with pytest.raises(ValueError, match="expects in_channels=2"):
        check(in_channels=2)({"image": image(), "label": label()})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_image(value: float) -> None:
    with pytest.raises(ValueError, match=f"{IMG} contains NaN or infinite"):
        check(label_key=None)({"image": image(value=value)})
    # a numpy image has no file name: the message names its key instead
    with pytest.raises(ValueError, match="^image contains NaN"):
        check(label_key=None)({"image": image(value=value).numpy()})


@pytest.mark.parametrize("shape", [(1, 6, 8), (1, 7, 6), (2, 6, 7), (1, 6, 7, 1)])
def test_label_shape_mismatch(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=f"{LAB}: label shape .* does not match image {IMG}"):
        check()({"image": image(), "label": label(shape, points={})})


def test_label_id_above_num_classes() -> None:
    with pytest.raises(ValueError, match=f"{LAB} contains class id 4(\\.0)? but num_classes=3"):
        check()({"image": image(), "label": label(points={(0, 1, 1): 4.0})})
    # the same id is fine with more classes, and any id without num_classes
    check(num_classes=4)({"image": image(), "label": label(points={(0, 1, 1): 4.0})})
    check(num_classes=None)({"image": image(), "label": label(points={(0, 1, 1): 40.0})})


@pytest.mark.parametrize(
    "points, message",
    [
        ({(0, 1, 1): -1.0, (0, 2, 2): 1.0}, "negative ids"),
        ({(0, 1, 1): 1.5}, "non-integer"),
        ({(0, 1, 1): float("nan")}, "NaN"),
    ],
)
def test_invalid_label_values(points: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"{LAB} contains {message}"):
        check()({"image": image(), "label": label(points=points)})


def test_all_zero_labels() -> None:
    data = {"image": image(), "label": label(points={})}
    with pytest.raises(ValueError, match=f"{LAB} has no labelled pixel"):
        check()(data)
    assert check(require_labels=False)(data)["label"] is data["label"]


def test_missing_label_key() -> None:
    with pytest.raises(KeyError, match="'label' missing for /x/img.tif"):
        check()({"image": image()})


def test_missing_image_key() -> None:
    with pytest.raises(KeyError):
        check()({"label": label()})
    data = {"label": label()}
    assert check(allow_missing_keys=True)(data)["label"] is data["label"]
