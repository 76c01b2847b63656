"""Hold out a seeded, class-stratified share of the sparse annotations for validation."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type, convert_to_numpy

__all__ = ["SplitSparseLabels", "SplitSparseLabelsD", "SplitSparseLabelsDict", "SplitSparseLabelsd"]


class SplitSparseLabels(Transform):
    """Keep either the training or the validation share of a sparse label map's points.

    The split is deterministic in ``seed`` and in the label map itself (not in call order), so a
    training pipeline with ``part="train"`` and a validation pipeline with ``part="val"`` see complementary
    points of the same file. Per class, ``ceil(fraction * n)`` points go to validation, capped at ``n - 1``
    so every class keeps at least one training point (a class with a single point stays in training).
    ``fraction=0`` is the identity (used when a ``val/`` folder exists).

    Args:
        fraction: share of each class's points held out for validation, in ``[0, 1)``.
        part: ``"train"`` or ``"val"``: which share to keep.
        seed: seed of the split.
    """

    backend = [torch.Tensor.__name__, np.ndarray.__name__]  # type: ignore[attr-defined]

    def __init__(self, fraction: float, part: str = "train", seed: int = 0) -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {fraction}.")
        if part not in ("train", "val"):
            raise ValueError(f"part must be 'train' or 'val', got {part!r}.")
        self.fraction, self.part, self.seed = float(fraction), part, int(seed)

    def held_out(self, label: NdarrayOrTensor) -> np.ndarray:
        """Boolean mask of the points held out for validation."""
        arr = convert_to_numpy(label)
        flat = arr.reshape(-1)
        held = np.zeros(flat.shape, dtype=bool)
        if self.fraction == 0.0:
            return held.reshape(arr.shape)
        rng = np.random.default_rng(self.seed)
        for cls in np.unique(flat[flat > 0]):
            idx = np.flatnonzero(flat == cls)
            n_val = min(math.ceil(self.fraction * idx.size), idx.size - 1)
            held[rng.permutation(idx)[:n_val]] = True
        return held.reshape(arr.shape)

    def __call__(self, label: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.fraction == 0.0:
            return label
        held = self.held_out(label)
        keep = held if self.part == "val" else ~held
        out = np.where(keep, convert_to_numpy(label), 0)
        return convert_to_dst_type(out, label)[0]


class SplitSparseLabelsd(MapTransform):
    """Dictionary version of :class:`SplitSparseLabels`.

    Args:
        keys: keys of the sparse label maps.
        fraction: see :class:`SplitSparseLabels`.
        part: see :class:`SplitSparseLabels`.
        seed: see :class:`SplitSparseLabels`.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = SplitSparseLabels.backend

    def __init__(
        self,
        keys: KeysCollection,
        fraction: float,
        part: str = "train",
        seed: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.splitter = SplitSparseLabels(fraction, part, seed)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.splitter(d[key])
        return d


SplitSparseLabelsD = SplitSparseLabelsDict = SplitSparseLabelsd
