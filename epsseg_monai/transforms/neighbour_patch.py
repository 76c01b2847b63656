"""Semi-supervised training patches: each labelled anchor patch with unlabelled neighbour patches around it."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.utils import look_up_option

from epsseg_monai.transforms.sparse_patch import RandSparseLabelPatch, RandSparseLabelPatchd
from epsseg_monai.utils import UNLABELLED

__all__ = [
    "RandNeighbourPatch",
    "RandNeighbourPatchD",
    "RandNeighbourPatchDict",
    "RandNeighbourPatchd",
    "neighbour_offsets",
]

#: Supported neighbourhood shapes: a disk/ball (reference code) or a square/cube.
DISTANCES = ("euclidean", "chebyshev")


def neighbour_offsets(radius: int, spatial_dims: int, distance: str = "euclidean") -> np.ndarray:
    """Integer offsets ``o != 0`` with ``|o| <= radius``, shape ``(N, spatial_dims)``.

    Args:
        radius: largest distance from the anchor, in pixels (voxels), at least 1.
        spatial_dims: number of spatial axes.
        distance: ``"euclidean"`` (a disk or ball: ``sum(o**2) <= radius**2``) or ``"chebyshev"`` (a square or
            cube: ``max(|o|) <= radius``).
    """
    distance = look_up_option(distance, DISTANCES)
    if int(radius) < 1:
        raise ValueError(f"radius must be >= 1, got {radius}.")
    r = int(radius)
    axes = np.meshgrid(*[np.arange(-r, r + 1)] * spatial_dims, indexing="ij")
    offsets = np.stack([a.ravel() for a in axes], axis=1)
    inside = (offsets**2).sum(1) <= r * r if distance == "euclidean" else np.abs(offsets).max(1) <= r
    inside &= np.any(offsets != 0, axis=1)
    return offsets[inside]


class RandNeighbourPatch(RandSparseLabelPatch):
    """Anchor patches on labelled pixels, each followed by ``num_neighbours`` patches centred near it.

    Anchors are sampled as in :class:`~epsseg_monai.transforms.RandSparseLabelPatch` (``num_samples`` of them,
    class-balanced by default). For each anchor, ``num_neighbours`` neighbour centres are drawn uniformly among
    the pixels of the image within ``radius`` of the anchor, the anchor itself excluded, **whether labelled or
    not** (the reference code only draws labelled pixels, so with point annotations it finds none). Neighbours
    are distinct while the neighbourhood has enough pixels inside the image, else drawn with repetition.

    A call returns ``num_samples * (1 + num_neighbours)`` patches grouped per anchor:
    ``[anchor_1, its neighbours..., anchor_2, ...]``. :attr:`centers` holds every centre, :attr:`classes` the
    anchors' classes and ``0`` (unlabelled) for neighbours, :attr:`anchors` ``True`` for anchors.

    :attr:`radius` may be changed between calls (e.g. by
    :class:`~epsseg_monai.handlers.SemiSupervisedScheduleHandler`).

    Args:
        patch_size: spatial size of the patches.
        num_samples: anchors per call.
        num_neighbours: neighbour patches per anchor (7 in ε-Seg).
        radius: largest distance of a neighbour centre from its anchor, in pixels (5 at the start of ε-Seg's
            semi-supervised phase).
        distance: ``"euclidean"`` (a disk or ball, as the reference code) or ``"chebyshev"`` (square or cube).
        class_balanced: anchors' classes in turn, see :class:`~epsseg_monai.transforms.RandSparseLabelPatch`.
        num_classes: when given, labels above it raise a ``ValueError``.
        pad_mode: ``np.pad`` mode for patches reaching past the border.
    """

    def __init__(
        self,
        patch_size: Sequence[int] | int,
        num_samples: int = 1,
        num_neighbours: int = 7,
        radius: int = 5,
        distance: str = "euclidean",
        class_balanced: bool = True,
        num_classes: int | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__(patch_size, num_samples, class_balanced, num_classes, pad_mode)
        if num_neighbours < 0:
            raise ValueError(f"num_neighbours must be >= 0, got {num_neighbours}.")
        self.num_neighbours = int(num_neighbours)
        self.distance = look_up_option(distance, DISTANCES)
        self.radius = radius
        self.anchors: list[bool] = []
        self._offsets: dict[tuple[int, int], np.ndarray] = {}

    @property
    def radius(self) -> int:
        """Largest distance of a neighbour centre from its anchor (pixels); settable between calls."""
        return self._radius

    @radius.setter
    def radius(self, value: int) -> None:
        if int(value) != value or int(value) < 1:
            raise ValueError(f"radius must be an integer >= 1, got {value}.")
        self._radius = int(value)

    def offsets(self, spatial_dims: int) -> np.ndarray:
        """The offsets of the current neighbourhood (cached per radius), see :func:`neighbour_offsets`."""
        key = (self.radius, spatial_dims)
        if key not in self._offsets:
            self._offsets = {key: neighbour_offsets(self.radius, spatial_dims, self.distance)}
        return self._offsets[key]

    def randomize(self, label: NdarrayOrTensor) -> None:
        """Choose the anchors (see :class:`RandSparseLabelPatch`), then each anchor's neighbours."""
        super().randomize(label)
        spatial = np.asarray(label.shape[1:])
        offsets = self.offsets(spatial.size)
        centers: list[tuple[int, ...]] = []
        classes: list[int] = []
        for anchor, cls in zip(self.centers, self.classes):
            candidates = np.asarray(anchor) + offsets
            candidates = candidates[np.all((candidates >= 0) & (candidates < spatial), axis=1)]
            centers.append(anchor)
            classes.append(cls)
            if self.num_neighbours == 0:
                continue
            if candidates.shape[0] == 0:
                raise ValueError(
                    f"No pixel of the image (spatial shape {tuple(spatial)}) lies within radius {self.radius} of "
                    f"the anchor {anchor}."
                )
            replace = candidates.shape[0] < self.num_neighbours
            chosen = candidates[self.R.choice(candidates.shape[0], self.num_neighbours, replace=replace)]
            centers.extend(tuple(int(v) for v in c) for c in chosen)
            classes.extend([UNLABELLED] * self.num_neighbours)
        self.centers, self.classes = centers, classes
        self.anchors = [i % (1 + self.num_neighbours) == 0 for i in range(len(centers))]


class RandNeighbourPatchd(RandSparseLabelPatchd):
    """Dictionary version of :class:`RandNeighbourPatch`: ``num_samples * (1 + num_neighbours)`` dictionaries.

    As :class:`~epsseg_monai.transforms.RandSparseLabelPatchd`, with neighbour patches after each anchor: every
    key in ``keys`` is cropped around the same centres; ``class_key`` holds the anchor's class (``1..C``) or
    ``0`` for a neighbour (so losses treat neighbours as unlabelled unless they get a pseudo-label);
    ``anchor_key`` holds a 0-d ``torch.bool`` tensor, ``True`` for anchors. Set :attr:`radius` to change the
    neighbourhood between calls.

    Args:
        keys: keys of the images to crop (channel-first, same spatial shape as the label map).
        label_key: key of the sparse label map (1[spatial], 0 = unlabelled); it is cropped only if in ``keys``.
        patch_size: spatial size of the patches.
        num_samples: anchors per input dictionary.
        num_neighbours: neighbour patches per anchor.
        radius: largest distance of a neighbour centre from its anchor, in pixels.
        distance: ``"euclidean"`` (disk/ball) or ``"chebyshev"`` (square/cube).
        class_balanced: see :class:`~epsseg_monai.transforms.RandSparseLabelPatch`.
        num_classes: when given, labels above it raise a ``ValueError``.
        pad_mode: ``np.pad`` mode past the border.
        class_key: output key of the centre's class (``0`` for neighbours).
        center_key: output key of the centre's coordinates, or ``None`` to leave it out.
        anchor_key: output key of the anchor flag, or ``None`` to leave it out.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        patch_size: Sequence[int] | int,
        num_samples: int = 1,
        num_neighbours: int = 7,
        radius: int = 5,
        distance: str = "euclidean",
        class_balanced: bool = True,
        num_classes: int | None = None,
        pad_mode: str = "reflect",
        class_key: str = "class",
        center_key: str | None = "center",
        anchor_key: str | None = "anchor",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            label_key,
            patch_size,
            num_samples=num_samples,
            class_balanced=class_balanced,
            num_classes=num_classes,
            pad_mode=pad_mode,
            class_key=class_key,
            center_key=center_key,
            allow_missing_keys=allow_missing_keys,
        )
        self.anchor_key = anchor_key
        self.sampler: RandNeighbourPatch = RandNeighbourPatch(
            patch_size, num_samples, num_neighbours, radius, distance, class_balanced, num_classes, pad_mode
        )

    @property
    def radius(self) -> int:
        """Largest distance of a neighbour centre from its anchor (pixels); settable between calls."""
        return self.sampler.radius

    @radius.setter
    def radius(self, value: int) -> None:
        self.sampler.radius = value

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> list[dict[Hashable, NdarrayOrTensor]]:
        outputs = super().__call__(data)
        if self.anchor_key is not None:
            for out, is_anchor in zip(outputs, self.sampler.anchors):
                out[self.anchor_key] = torch.tensor(is_anchor, dtype=torch.bool)
        return outputs


RandNeighbourPatchD = RandNeighbourPatchDict = RandNeighbourPatchd
