"""Training patches from sparse labels: one patch centred on each sampled labelled pixel."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, MultiSampleTrait, Randomizable, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy, ensure_tuple_rep

from epsseg_monai.utils import UNLABELLED, center_index, check_sparse_labels

__all__ = [
    "RandSparseLabelPatch",
    "RandSparseLabelPatchD",
    "RandSparseLabelPatchDict",
    "RandSparseLabelPatchd",
    "extract_patch",
]


def extract_patch(
    img: NdarrayOrTensor, center: Sequence[int], patch_size: Sequence[int], pad_mode: str = "reflect"
) -> NdarrayOrTensor:
    """Crop the patch of ``patch_size`` whose centre voxel (index ``size // 2``) is ``center``.

    Parts outside the image are padded with ``np.pad``'s ``pad_mode`` (``reflect`` by default; numpy
    reflects repeatedly, so patches larger than the image work too).

    Args:
        img: channel-first image C[spatial].
        center: spatial coordinates of the centre voxel.
        patch_size: spatial size of the patch.
        pad_mode: ``np.pad`` mode for the parts outside the image.

    Returns:
        The patch, shape ``(C, *patch_size)``, of the type of ``img``.
    """
    spatial = img.shape[1:]
    crop, pads, recrop = [slice(None)], [(0, 0)], [slice(None)]
    for c, p, size in zip(center, patch_size, spatial):
        lo = int(c) - center_index(p)
        hi = lo + p
        if lo >= 0 and hi <= size:
            crop.append(slice(lo, hi))
            pads.append((0, 0))
            recrop.append(slice(None))
        else:  # pad the whole axis so the values equal padding the whole image once (as the inferers do)
            crop.append(slice(None))
            pads.append((max(-lo, 0), max(hi - size, 0)))
            recrop.append(slice(lo + max(-lo, 0), hi + max(-lo, 0)))
    patch = img[tuple(crop)]
    if any(a or b for a, b in pads):
        padded = np.pad(convert_to_numpy(patch), pads, mode=pad_mode)[tuple(recrop)]
        patch = convert_to_dst_type(padded, img)[0] if isinstance(img, torch.Tensor) else padded
    elif isinstance(img, torch.Tensor):
        patch = patch.clone()
    else:
        patch = patch.copy()
    return patch


class RandSparseLabelPatch(Randomizable, Transform, MultiSampleTrait):
    """Sample ``num_samples`` patches centred on labelled pixels of a sparse label map.

    The label map holds ``0`` for unlabelled pixels and ``1..C`` for class ids (napari Labels
    convention). Each patch's centre voxel (index ``patch_size // 2`` per axis) is a labelled pixel, so the
    sample's label is that pixel's class; near the border the patch is padded rather than shifted.
    After a call, :attr:`centers` and :attr:`classes` hold the sampled centres and their classes.

    Args:
        patch_size: spatial size of the patches (int for all axes).
        num_samples: patches per call.
        class_balanced: choose classes in turn (a random permutation of the classes present, repeated), so
            each class present gets ``num_samples / n_classes`` patches up to one; otherwise sample labelled
            pixels uniformly.
        num_classes: when given, labels above it raise a ``ValueError``.
        pad_mode: ``np.pad`` mode for patches reaching past the border.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        patch_size: Sequence[int] | int,
        num_samples: int = 1,
        class_balanced: bool = True,
        num_classes: int | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.patch_size = patch_size
        self.num_samples = int(num_samples)
        self.class_balanced = class_balanced
        self.num_classes = num_classes
        self.pad_mode = pad_mode
        self.centers: list[tuple[int, ...]] = []
        self.classes: list[int] = []

    def randomize(self, label: NdarrayOrTensor) -> None:
        """Choose centres and classes from the sparse label map ``label`` (shape 1[spatial])."""
        lab = convert_to_numpy(label)[0]
        check_sparse_labels(lab, self.num_classes, name="sparse label map")
        coords = np.nonzero(lab != UNLABELLED)
        if coords[0].size == 0:
            raise ValueError(
                "The sparse label map has no labelled pixel (all 0): annotate at least one pixel per class "
                "with ids 1..C, or leave this image out of the training list."
            )
        values = lab[coords].astype(np.int64)
        if self.class_balanced:
            present = np.unique(values)
            order = np.concatenate([self.R.permutation(present) for _ in range(-(-self.num_samples // present.size))])[
                : self.num_samples
            ]
            members = {cls: np.flatnonzero(values == cls) for cls in present}
            index = np.asarray([members[cls][self.R.randint(members[cls].size)] for cls in order])
        else:
            index = self.R.randint(values.size, size=self.num_samples)
        self.centers = [tuple(int(c[i]) for c in coords) for i in index]
        self.classes = [int(values[i]) for i in index]

    def __call__(self, img: NdarrayOrTensor, label: NdarrayOrTensor, randomize: bool = True) -> list[NdarrayOrTensor]:
        """Return ``num_samples`` patches of ``img`` (C[spatial]) centred on labelled pixels of ``label``.

        Raises:
            ValueError: when shapes do not match, labels are invalid, nothing is labelled, or a patch holds
                NaN/inf values.
        """
        if label.ndim != img.ndim or label.shape[0] != 1 or tuple(label.shape[1:]) != tuple(img.shape[1:]):
            raise ValueError(
                f"The sparse label map must be 1[spatial] with the image's spatial shape: image {tuple(img.shape)}, "
                f"label {tuple(label.shape)}."
            )
        if randomize:
            self.randomize(label)
        size = ensure_tuple_rep(self.patch_size, img.ndim - 1)
        patches = [extract_patch(img, c, size, self.pad_mode) for c in self.centers]
        for patch, center in zip(patches, self.centers):
            finite = torch.isfinite(patch).all() if isinstance(patch, torch.Tensor) else np.isfinite(patch).all()
            if not finite:
                raise ValueError(
                    f"The image has NaN or infinite values in the patch around labelled pixel {center}; "
                    "replace them (e.g. with the image mean) before training."
                )
        return patches


class RandSparseLabelPatchd(Randomizable, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandSparseLabelPatch`: a list of ``num_samples`` dictionaries.

    Every key in ``keys`` is cropped around the same centres; the centre's class goes to ``class_key`` (a
    0-d ``torch.long`` tensor, ids ``1..C``) and the centre's coordinates to ``center_key``; other entries
    are shared (shallow copy).

    To rotate or flip the patches afterwards, draw them one voxel larger (an odd side) and crop back with
    ``SpatialCropd(roi_start=0, roi_end=patch_size)`` after the rotations and flips: they keep the centre of
    an odd-sided patch, but move that of an even-sided one by a voxel (``bundle/configs/train.json`` does so).

    Args:
        keys: keys of the images to crop (channel-first, same spatial shape as the label map).
        label_key: key of the sparse label map (1[spatial], 0 = unlabelled); it is cropped only if in ``keys``.
        patch_size: spatial size of the patches.
        num_samples: patches per input dictionary.
        class_balanced: see :class:`RandSparseLabelPatch`.
        num_classes: when given, labels above it raise a ``ValueError``.
        pad_mode: ``np.pad`` mode past the border.
        class_key: output key of the centre's class.
        center_key: output key of the centre's coordinates, or ``None`` to leave it out.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = RandSparseLabelPatch.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        patch_size: Sequence[int] | int,
        num_samples: int = 1,
        class_balanced: bool = True,
        num_classes: int | None = None,
        pad_mode: str = "reflect",
        class_key: str = "class",
        center_key: str | None = "center",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.class_key = class_key
        self.center_key = center_key
        self.sampler = RandSparseLabelPatch(patch_size, num_samples, class_balanced, num_classes, pad_mode)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandSparseLabelPatchd:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(self, label: NdarrayOrTensor) -> None:
        self.sampler.randomize(label)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> list[dict[Hashable, NdarrayOrTensor]]:
        d = dict(data)
        if self.label_key not in d:
            raise KeyError(f"Sparse label key {self.label_key!r} not found; keys are {list(d)}.")
        label = d[self.label_key]
        self.randomize(label)
        outputs: list[dict[Hashable, NdarrayOrTensor]] = [dict(d) for _ in self.sampler.centers]
        for key in self.key_iterator(d):
            patches = self.sampler(d[key], label, randomize=False)
            for out, patch in zip(outputs, patches):
                out[key] = patch
        for out, center, cls in zip(outputs, self.sampler.centers, self.sampler.classes):
            out[self.class_key] = torch.tensor(cls, dtype=torch.long)
            if self.center_key is not None:
                out[self.center_key] = torch.tensor(center, dtype=torch.long)
        return outputs


RandSparseLabelPatchD = RandSparseLabelPatchDict = RandSparseLabelPatchd
