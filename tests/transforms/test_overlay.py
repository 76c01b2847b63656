"""Tests of ``epsseg_monai.transforms.overlay``: class colours blended over a grey image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epsseg_monai.transforms.overlay import PALETTE, colorize_labels, grey_image, label_overlay


def ramp(shape: tuple[int, int] = (6, 10)) -> np.ndarray:
    """A float image whose values increase along the flat index (distinct grey levels)."""
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) * 0.37 - 4.0


def test_palette() -> None:
    assert PALETTE.shape == (10, 3) and PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in PALETTE.tolist()}) == len(PALETTE)  # every class its own colour
    assert not (PALETTE == 0).all(1).any()  # no class is black like the unlabelled pixels


def test_colorize_labels() -> None:
    labels = np.array([[0, 1, 2], [10, 11, 3]])
    rgb = colorize_labels(labels)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(rgb[0, 1], PALETTE[0])
    np.testing.assert_array_equal(rgb[0, 2], PALETTE[1])
    np.testing.assert_array_equal(rgb[1, 0], PALETTE[9])
    np.testing.assert_array_equal(rgb[1, 1], PALETTE[0])  # the palette cycles past its end
    np.testing.assert_array_equal(rgb[1, 2], PALETTE[2])
    np.testing.assert_array_equal(colorize_labels(torch.as_tensor(labels, dtype=torch.uint8)), rgb)


def test_grey_image_scales_between_percentiles() -> None:
    img = ramp()
    np.testing.assert_array_equal(grey_image(img, percentiles=(0.0, 100.0))[0, 0], 0)
    np.testing.assert_array_equal(grey_image(img, percentiles=(0.0, 100.0))[-1, -1], 255)
    expected = ((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)
    np.testing.assert_array_equal(grey_image(img, percentiles=(0.0, 100.0)), expected)
    # outliers beyond the 1st / 99th percentile are clipped and do not squash the rest into one grey level
    spiky = ramp((40, 50))
    spiky[0, 0], spiky[-1, -1] = -1e6, 1e6
    grey = grey_image(spiky)
    assert grey.dtype == np.uint8 and grey.shape == spiky.shape
    assert grey[0, 0] == 0 and grey[-1, -1] == 255
    inner = grey.reshape(-1)[1:-1].astype(int)
    assert (np.diff(inner) >= 0).all() and inner.min() == 0 and inner.max() == 255
    assert len(np.unique(inner)) > 200


def test_grey_image_channel_first_and_constant() -> None:
    img = ramp()
    stacked = np.stack([img, -img, np.zeros_like(img)])  # only the first channel is used
    np.testing.assert_array_equal(grey_image(stacked), grey_image(img))
    np.testing.assert_array_equal(grey_image(torch.as_tensor(img[None])), grey_image(img))
    flat = grey_image(np.full((4, 5), 7.0))
    assert flat.dtype == np.uint8 and (flat == 0).all()  # no division by zero
    with pytest.raises(ValueError, match="2D image"):
        grey_image(np.zeros((1, 2, 4, 5)))
    with pytest.raises(ValueError, match="2D image"):
        grey_image(np.zeros(5))


def test_label_overlay_colours_and_grey() -> None:
    img = ramp()
    labels = np.zeros(img.shape, dtype=np.uint8)
    labels[1, 2], labels[3, 4], labels[5, 9] = 1, 2, 3
    out = label_overlay(img, labels, alpha=0.4)
    assert out.shape == (*img.shape, 3) and out.dtype == np.uint8
    grey = grey_image(img)
    unlabelled = labels == 0
    for c in range(3):
        np.testing.assert_array_equal(out[..., c][unlabelled], grey[unlabelled])
    for (r, c), k in zip([(1, 2), (3, 4), (5, 9)], [1, 2, 3]):
        expected = np.round(0.6 * float(grey[r, c]) + 0.4 * PALETTE[k - 1].astype(np.float32))
        np.testing.assert_array_equal(out[r, c], expected.astype(np.uint8))
        assert not (out[r, c] == out[r, c, 0]).all()  # coloured, not grey
    # alpha 1: the pure class colour; alpha 0: the image only
    np.testing.assert_array_equal(label_overlay(img, labels, alpha=1.0)[3, 4], PALETTE[1])
    np.testing.assert_array_equal(label_overlay(img, labels, alpha=0.0), np.repeat(grey[..., None], 3, axis=-1))


def test_label_overlay_accepts_channel_first_inputs_and_tensors() -> None:
    img = ramp((7, 5))
    labels = (np.arange(35).reshape(7, 5) % 4).astype(np.int64)
    expected = label_overlay(img, labels)
    np.testing.assert_array_equal(label_overlay(img[None], labels[None]), expected)
    np.testing.assert_array_equal(label_overlay(torch.as_tensor(img[None]), torch.as_tensor(labels)), expected)
    rgb_like = np.stack([img, img[::-1], img * 0])
    np.testing.assert_array_equal(label_overlay(rgb_like, labels), expected)


def test_label_overlay_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="does not match"):
        label_overlay(ramp((6, 10)), np.zeros((10, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        label_overlay(ramp((6, 10)), np.zeros((2, 6, 10), dtype=np.uint8))
