"""ε-Seg transforms: centre-region masking and sparse-label patch sampling (array and dictionary versions)."""

from __future__ import annotations

from .checks import CheckInputsD, CheckInputsd, CheckInputsDict
from .load_image import LoadMicroscopyImage, LoadMicroscopyImageD, LoadMicroscopyImaged, LoadMicroscopyImageDict
from .masking import CenterRegionMask, CenterRegionMaskD, CenterRegionMaskd, CenterRegionMaskDict
from .save_segmentation import SaveSegmentationD, SaveSegmentationd, SaveSegmentationDict, probabilities_to_labels
from .sparse_patch import (
    RandSparseLabelPatch,
    RandSparseLabelPatchD,
    RandSparseLabelPatchd,
    RandSparseLabelPatchDict,
    extract_patch,
)
from .sparse_split import SplitSparseLabels, SplitSparseLabelsD, SplitSparseLabelsd, SplitSparseLabelsDict

__all__ = [
    "LoadMicroscopyImage",
    "LoadMicroscopyImageD",
    "LoadMicroscopyImageDict",
    "LoadMicroscopyImaged",
    "CheckInputsD",
    "CheckInputsDict",
    "CheckInputsd",
    "SaveSegmentationD",
    "SaveSegmentationDict",
    "SaveSegmentationd",
    "SplitSparseLabels",
    "SplitSparseLabelsD",
    "SplitSparseLabelsDict",
    "SplitSparseLabelsd",
    "probabilities_to_labels",
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
