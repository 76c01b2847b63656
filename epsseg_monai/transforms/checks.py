"""Input checks that name the file and the fix before a bad image or annotation reaches training."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from ..utils import check_sparse_labels

__all__ = ["CheckInputsD", "CheckInputsDict", "CheckInputsd"]


def _name(x: Any, fallback: str) -> str:
    meta = getattr(x, "meta", None) or {}
    return str(meta.get("filename_or_obj", fallback))


class CheckInputsd(MapTransform):
    """Check channel-first images (and optionally sparse label maps) against the model's expectations.

    Raises ``ValueError`` naming the file when an image has the wrong number of spatial dimensions or
    channels, holds NaN/inf, or when a label map has a different spatial shape, non-integer or
    out-of-range ids, or (with ``require_labels``) no labelled pixel at all. Data pass through unchanged.

    Args:
        keys: image keys (channel-first arrays or MetaTensors).
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: channels the network expects.
        label_key: key of the sparse label map (``1[spatial]``), or ``None`` (inference).
        num_classes: number of classes ``C``; ids must be in ``0..C``.
        require_labels: refuse label maps without any labelled pixel.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int,
        in_channels: int,
        label_key: str | None = None,
        num_classes: int | None = None,
        require_labels: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        self.label_key, self.num_classes, self.require_labels = label_key, num_classes, require_labels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            name = _name(img, str(key))
            if img.ndim != self.spatial_dims + 1:
                raise ValueError(
                    f"{name}: shape {tuple(img.shape)} (channel first) is not a {self.spatial_dims}D image with "
                    f"channels; set spatial_dims (2 for images, 3 for volumes) to match the data, or for a TIFF "
                    "mark the channel axis in its metadata (ImageJ/OME 'C')."
                )
            if img.shape[0] != self.in_channels:
                raise ValueError(
                    f"{name} has {img.shape[0]} channel(s) but the network expects in_channels={self.in_channels}; "
                    "set --in_channels to match."
                )
            values = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
            if values.is_floating_point() and not torch.isfinite(values).all():
                raise ValueError(f"{name} contains NaN or infinite values; fix or remove the image.")
            if self.label_key is not None:
                self._check_label(d, img, name)
        return d

    def _check_label(self, d: dict[Hashable, Any], img: Any, name: str) -> None:
        if self.label_key not in d:
            raise KeyError(f"Label key {self.label_key!r} missing for {name}.")
        label = d[self.label_key]
        lname = _name(label, self.label_key)
        if tuple(label.shape[1:]) != tuple(img.shape[1:]) or label.shape[0] != 1:
            raise ValueError(
                f"{lname}: label shape {tuple(label.shape[1:])} (channels {label.shape[0]}) does not match image "
                f"{name} spatial shape {tuple(img.shape[1:])}; annotations must be single-channel maps of the "
                "image's size."
            )
        check_sparse_labels(label, self.num_classes, name=lname)
        if self.require_labels and not (label > 0).any():
            raise ValueError(f"{lname} has no labelled pixel (all zeros); annotate some pixels or remove the pair.")


CheckInputsD = CheckInputsDict = CheckInputsd
