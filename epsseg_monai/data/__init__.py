"""Data: image I/O (TIFF reader), data lists for the bundle's folder convention, the synthetic EM default."""

from __future__ import annotations

from .datalist import (
    check_validation,
    dataset_splits,
    image_datalist,
    intensity_statistics,
    label_coverage,
    load_intensity_stats,
    save_intensity_stats,
    sparse_datalist,
)
from .image_io import (
    IMAGE_SUFFIXES,
    MicroscopyImageReader,
    TiffFileReader,
    image_readers,
    image_stem,
    image_suffix,
    is_nifti,
    list_images,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "MicroscopyImageReader",
    "TiffFileReader",
    "check_validation",
    "dataset_splits",
    "image_datalist",
    "image_readers",
    "image_stem",
    "image_suffix",
    "intensity_statistics",
    "is_nifti",
    "label_coverage",
    "list_images",
    "load_intensity_stats",
    "save_intensity_stats",
    "sparse_datalist",
]
