"""ε-Seg transforms: centre-region masking and sparse-label patch sampling (array and dictionary versions)."""

from __future__ import annotations

from .masking import CenterRegionMask, CenterRegionMaskD, CenterRegionMaskd, CenterRegionMaskDict
from .sparse_patch import (
    RandSparseLabelPatch,
    RandSparseLabelPatchD,
    RandSparseLabelPatchd,
    RandSparseLabelPatchDict,
    extract_patch,
)

__all__ = [
    "CenterRegionMask",
    "CenterRegionMaskD",
    "CenterRegionMaskDict",
    "CenterRegionMaskd",
    "RandSparseLabelPatch",
    "RandSparseLabelPatchD",
    "RandSparseLabelPatchDict",
    "RandSparseLabelPatchd",
    "extract_patch",
]
