"""ε-Seg transforms: centre masking, sparse-label and neighbour patch sampling (array and dictionary versions)."""

from __future__ import annotations

from .checks import CheckInputsD, CheckInputsd, CheckInputsDict
from .click_suggestions import (
    SuggestClicks,
    SuggestClicksD,
    SuggestClicksd,
    SuggestClicksDict,
    click_uncertainty,
    write_clicks_csv,
)
from .load_image import LoadMicroscopyImage, LoadMicroscopyImageD, LoadMicroscopyImaged, LoadMicroscopyImageDict
from .masking import CenterRegionMask, CenterRegionMaskD, CenterRegionMaskd, CenterRegionMaskDict
from .neighbour_patch import (
    RandNeighbourPatch,
    RandNeighbourPatchD,
    RandNeighbourPatchd,
    RandNeighbourPatchDict,
    neighbour_offsets,
)
from .prior_adjustment import (
    AdjustClassPriors,
    AdjustClassPriorsD,
    AdjustClassPriorsd,
    AdjustClassPriorsDict,
    ShiftClassPriors,
    ShiftClassPriorsD,
    ShiftClassPriorsd,
    ShiftClassPriorsDict,
    em_class_priors,
    shift_class_priors,
)
from .save_segmentation import SaveSegmentationD, SaveSegmentationd, SaveSegmentationDict, probabilities_to_labels
from .self_training import DensePseudoLabels, DensePseudoLabelsD, DensePseudoLabelsd, DensePseudoLabelsDict
from .sparse_patch import (
    RandSparseLabelPatch,
    RandSparseLabelPatchD,
    RandSparseLabelPatchd,
    RandSparseLabelPatchDict,
    extract_patch,
)
from .sparse_split import SplitSparseLabels, SplitSparseLabelsD, SplitSparseLabelsd, SplitSparseLabelsDict

__all__ = [
    "SuggestClicks",
    "SuggestClicksD",
    "SuggestClicksDict",
    "SuggestClicksd",
    "click_uncertainty",
    "write_clicks_csv",
    "AdjustClassPriors",
    "DensePseudoLabels",
    "DensePseudoLabelsD",
    "DensePseudoLabelsDict",
    "DensePseudoLabelsd",
    "AdjustClassPriorsD",
    "AdjustClassPriorsDict",
    "AdjustClassPriorsd",
    "ShiftClassPriors",
    "ShiftClassPriorsD",
    "ShiftClassPriorsDict",
    "ShiftClassPriorsd",
    "em_class_priors",
    "shift_class_priors",
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
    "RandNeighbourPatch",
    "RandNeighbourPatchD",
    "RandNeighbourPatchDict",
    "RandNeighbourPatchd",
    "neighbour_offsets",
]
