"""Centre-region masking: hide the centre of a patch so the network must inpaint it from its context."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, ensure_tuple_rep

from epsseg_monai.utils import center_region_slices

__all__ = ["CenterRegionMask", "CenterRegionMaskD", "CenterRegionMaskDict", "CenterRegionMaskd"]

FILL_MODES = ("zero", "ring_mean")


class CenterRegionMask(Transform):
    """Replace the centre square (2D) or cube (3D) of side ``mask_size`` of a channel-first patch.

    The centre follows :mod:`epsseg_monai.utils`: index ``size // 2`` on each axis, the region starting at
    ``size // 2 - mask_size // 2``. Everything outside the region is returned unchanged.

    Args:
        mask_size: side of the masked region (1 px in the reference for EM, 3 px for fluorescence).
        fill: ``"zero"`` sets the region to 0 (the mean of z-scored data); ``"ring_mean"`` sets it, per
            channel, to the mean of a ring of width ``ring_width`` around it (the whole rest of the patch if
            the ring does not fit).
        ring_width: width of that ring in voxels.

    Raises:
        ValueError: for an unknown ``fill`` or a region that does not fit the patch.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, mask_size: int = 1, fill: str = "zero", ring_width: int = 1) -> None:
        if fill not in FILL_MODES:
            raise ValueError(f"fill must be one of {FILL_MODES}, got {fill!r}.")
        if mask_size < 1:
            raise ValueError(f"mask_size must be >= 1, got {mask_size}.")
        if ring_width < 1:
            raise ValueError(f"ring_width must be >= 1, got {ring_width}.")
        self.mask_size = int(mask_size)
        self.fill = fill
        self.ring_width = int(ring_width)

    def mask(self, spatial_shape: tuple[int, ...]) -> np.ndarray:
        """Boolean mask of the region, shape ``(1, *spatial_shape)``."""
        out = np.zeros((1, *spatial_shape), dtype=bool)
        out[(slice(None),) + center_region_slices(spatial_shape, self.mask_size)] = True
        return out

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return a masked copy of ``img`` (shape C[spatial]); ``img`` itself is not modified."""
        if img.ndim < 2:
            raise ValueError(f"Expected a channel-first image C[spatial], got shape {tuple(img.shape)}.")
        spatial = tuple(img.shape[1:])
        region = (slice(None),) + center_region_slices(spatial, self.mask_size)
        out = img.clone() if isinstance(img, torch.Tensor) else np.array(img, copy=True)
        if self.fill == "zero":
            out[region] = 0
            return out
        width = self.ring_width
        outer = tuple(slice(r.start - width, r.stop + width) for r in region[1:])
        if all(o.start >= 0 and o.stop <= size for o, size in zip(outer, spatial)):
            ring = np.zeros(spatial, dtype=bool)
            ring[outer] = True
        else:  # the ring does not fit the patch: use everything outside the region
            ring = np.ones(spatial, dtype=bool)
        ring[region[1:]] = False
        if not ring.any():
            raise ValueError(f"No voxels around the centre region of a patch of shape {spatial} to take a mean from.")
        if isinstance(img, torch.Tensor):
            ring_t = torch.as_tensor(ring, device=img.device)
            means = img[:, ring_t].float().mean(dim=1).to(img.dtype)
            fill = means.reshape((-1,) + (1,) * len(spatial))
        else:
            fill = img[:, ring].mean(axis=1).astype(img.dtype).reshape((-1,) + (1,) * len(spatial))
        out[region] = fill
        return out


class CenterRegionMaskd(MapTransform):
    """Dictionary version of :class:`CenterRegionMask`.

    Args:
        keys: keys of the images to mask.
        mask_size: side of the masked region.
        fill: ``"zero"`` or ``"ring_mean"`` (see :class:`CenterRegionMask`).
        ring_width: ring width for ``"ring_mean"``.
        unmasked_keys: optional keys (one per key in ``keys``) under which the unmasked images are kept, e.g.
            as the target of the inpainting loss.
        mask_key: optional key under which the boolean region mask (``(1, *spatial)``) is stored.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = CenterRegionMask.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask_size: int = 1,
        fill: str = "zero",
        ring_width: int = 1,
        unmasked_keys: KeysCollection | None = None,
        mask_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.masker = CenterRegionMask(mask_size=mask_size, fill=fill, ring_width=ring_width)
        self.unmasked_keys = ensure_tuple_rep(unmasked_keys, len(self.keys)) if unmasked_keys is not None else None
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        unmasked = self.unmasked_keys or (None,) * len(self.keys)
        for key, keep_key in self.key_iterator(d, unmasked):
            if keep_key is not None:
                d[keep_key] = d[key]  # the masker returns a copy, so the original stays unmasked
            d[key] = self.masker(d[key])
            if self.mask_key is not None:
                d[self.mask_key] = torch.as_tensor(self.masker.mask(tuple(d[key].shape[1:])))
        return d


CenterRegionMaskD = CenterRegionMaskDict = CenterRegionMaskd
