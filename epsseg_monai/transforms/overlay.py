"""Colour previews of label maps: class colours blended over a grey image (a napari-like overlay)."""

from __future__ import annotations

import numpy as np
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_numpy

__all__ = ["PALETTE", "colorize_labels", "grey_image", "label_overlay"]

#: RGB colour of class ids 1, 2, ... (id 0, unlabelled, stays transparent); cycles past the end.
PALETTE = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [188, 189, 34],
        [23, 190, 207],
        [127, 127, 127],
    ],
    dtype=np.uint8,
)


def grey_image(image: NdarrayOrTensor, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """A 2D image (``[C,] H, W``; the first channel is used) scaled to uint8 between two percentiles."""
    img = convert_to_numpy(image).astype(np.float32)
    if img.ndim == 3:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"Expected a 2D image ([C,] H, W), got shape {img.shape}.")
    lo, hi = np.percentile(img, percentiles)
    scaled = (img - lo) / max(hi - lo, 1e-12)
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def colorize_labels(labels: NdarrayOrTensor) -> np.ndarray:
    """RGB image ``H, W, 3`` of a label map with ids ``0..C`` (0 black)."""
    lab = convert_to_numpy(labels).astype(np.int64)
    rgb = np.zeros((*lab.shape, 3), dtype=np.uint8)
    labelled = lab > 0
    rgb[labelled] = PALETTE[(lab[labelled] - 1) % len(PALETTE)]
    return rgb


def label_overlay(image: NdarrayOrTensor, labels: NdarrayOrTensor, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8 ``H, W, 3``: the label colours blended with weight ``alpha`` over the grey image.

    Args:
        image: 2D image ``[C,] H, W`` (any range; scaled between its 1st and 99th percentile).
        labels: label map ``H, W`` (or ``1, H, W``) with ids ``1..C``; ``0`` shows the image only.
        alpha: opacity of the class colours.
    """
    grey = grey_image(image)
    lab = convert_to_numpy(labels)
    if lab.ndim == 3 and lab.shape[0] == 1:
        lab = lab[0]
    if lab.shape != grey.shape:
        raise ValueError(f"Label map shape {lab.shape} does not match the image's {grey.shape}.")
    out = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    labelled = lab > 0
    out[labelled] = (1 - alpha) * out[labelled] + alpha * colorize_labels(lab)[labelled]
    return np.round(out).astype(np.uint8)
