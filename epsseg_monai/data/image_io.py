"""Reading and writing microscopy images: a ``tifffile`` reader for MONAI's ``LoadImage`` and file-name helpers.

MONAI reads NIfTI with nibabel and PNG with PIL but has no general TIFF reader for microscopy stacks;
:class:`TiffFileReader` fills that gap with ``tifffile`` (the library the field uses). All readers used by
this package keep numpy's (row, column[, ...]) axis order, so a label map written back as TIFF overlays
its input image exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

__all__ = [
    "IMAGE_SUFFIXES",
    "MicroscopyImageReader",
    "TiffFileReader",
    "image_readers",
    "image_stem",
    "image_suffix",
    "is_nifti",
    "list_images",
]

#: File suffixes the bundle reads (lower case), longest first so ``.nii.gz`` wins over ``.gz``.
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".tiff", ".nii", ".tif", ".png")


def image_suffix(path: str | os.PathLike) -> str:
    """The supported suffix of ``path`` (``.nii.gz``, ``.tif``, ...) or ``""`` when it is not an image we read."""
    name = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), "")


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``a/b/07.nii.gz`` → ``07``, ``cells.ome.tif`` → ``cells``.

    The ``.ome`` of an OME-TIFF belongs to the suffix, as in
    :func:`~epsseg_monai.data.large_image.predict_large_images`, so predictions of ``cells.ome.tif`` are named
    ``cells...`` by every inference path and are matched to ``cells.tif`` labels.
    """
    name = Path(path).name
    suffix = image_suffix(path)
    if not suffix:
        return Path(path).stem
    stem = name[: len(name) - len(suffix)]
    if suffix in (".tif", ".tiff") and stem.lower().endswith(".ome"):
        stem = stem[: -len(".ome")]
    return stem


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return image_suffix(path).startswith(".nii")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The readable images of ``folder`` (not recursive), sorted by name.

    Raises:
        FileNotFoundError: when ``folder`` is not a directory.
        ValueError: when two files share a stem (``a.tif`` and ``a.png``): the pairing would be ambiguous.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {folder} does not exist.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and image_suffix(p) and not p.name.startswith("."))
    stems: dict[str, Path] = {}
    for f in files:
        if image_stem(f) in stems:
            raise ValueError(
                f"{stems[image_stem(f)]} and {f} have the same name; keep one file per image name in {folder}."
            )
        stems[image_stem(f)] = f
    return files


def _stack_with_meta(
    arrays: Sequence[np.ndarray], channel_dims: Sequence[int | str], axes: Sequence[str] | None = None
) -> tuple[np.ndarray, dict]:
    """Stack arrays read from files with the metadata ``LoadImage`` needs (channel axis, spatial shape)."""
    compatible: dict = {}
    for i, (array, channel_dim) in enumerate(zip(arrays, channel_dims)):
        spatial = np.asarray(array.shape)
        if isinstance(channel_dim, int):
            spatial = np.delete(spatial, channel_dim)
        header: dict[Any, Any] = {
            MetaKeys.ORIGINAL_CHANNEL_DIM: channel_dim,
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.SPATIAL_SHAPE: spatial,
        }
        if axes is not None:
            header["axes"] = axes[i]
        _copy_compatible_dict(header, compatible)
    return _stack_images(list(arrays), compatible), compatible


class TiffFileReader(ImageReader):
    """Read TIFF files (2D images, 3D stacks, multi-channel) with ``tifffile`` for ``monai.transforms.LoadImage``.

    The channel axis is taken from the file's axes metadata (ImageJ/OME ``C``, or ``S`` for RGB samples);
    files without one are treated as single-channel, so a plain multi-page TIFF is a 3D volume. Pass
    ``channel_dim`` to override. Arrays keep their stored (Z, Y, X) order, like ``PILReader(reverse_indexing=False)``.

    Args:
        channel_dim: index of the channel axis, ``"no_channel"``, or ``None`` to read it from the metadata.
        series: index of the TIFF series to read.
    """

    def __init__(self, channel_dim: int | str | None = None, series: int = 0, **kwargs: Any) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.series = series
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        return all(image_suffix(f) in (".tif", ".tiff") for f in ensure_tuple(filename))

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs: Any) -> list[tuple[np.ndarray, str]]:
        import tifffile

        out = []
        for name in ensure_tuple(data):
            try:
                with tifffile.TiffFile(name) as tif:
                    series = tif.series[self.series]
                    out.append((series.asarray(), series.axes))
            except (tifffile.TiffFileError, OSError, IndexError, ValueError) as e:
                raise ValueError(f"Cannot read TIFF file {name}: {e}. Check that it is a complete, valid TIFF.") from e
        return out

    def get_data(self, img: list[tuple[np.ndarray, str]]) -> tuple[np.ndarray, dict]:
        arrays, channel_dims = [], []
        for array, axes in img:
            channel_dim = self.channel_dim
            if channel_dim is None:
                channel_dim = next((axes.index(a) for a in "CS" if a in axes), "no_channel")
            arrays.append(array)
            channel_dims.append(channel_dim)
        return _stack_with_meta(arrays, channel_dims, axes=[axes for _, axes in img])


class MicroscopyImageReader(ImageReader):
    """One reader for every format the bundle reads, chosen by file suffix, with errors that name the file.

    TIFF goes to :class:`TiffFileReader`, PNG to PIL (numpy axis order, RGB(A) as channels last), NIfTI to
    MONAI's ``NibabelReader``. Unlike a list of readers given to ``LoadImage`` (which tries them all and
    swallows their errors), a corrupt or unsupported file raises a ``ValueError`` saying which file and why;
    pass it as the runtime reader (as :class:`~epsseg_monai.transforms.LoadMicroscopyImaged` does) so that
    error reaches the user unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        from monai.data import NibabelReader

        self.tiff = TiffFileReader()
        self.nifti = NibabelReader()

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        return all(image_suffix(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs: Any) -> tuple[str, Any]:
        names = ensure_tuple(data)
        kinds = {"tiff" if image_suffix(n) in (".tif", ".tiff") else image_suffix(n).lstrip(".")[:3] for n in names}
        if any(not image_suffix(n) for n in names) or len(kinds) != 1:
            raise ValueError(f"Cannot read {list(map(str, names))}: supported are {', '.join(IMAGE_SUFFIXES)} files.")
        kind = kinds.pop()
        if kind == "tiff":
            return kind, self.tiff.read(names)
        if kind == "png":
            from PIL import Image

            arrays = []
            for name in names:
                try:
                    with Image.open(name) as im:
                        arrays.append(np.asarray(im))
                except (OSError, ValueError) as e:
                    raise ValueError(
                        f"Cannot read PNG file {name}: {e}. Check that it is a complete, valid PNG."
                    ) from e
            return kind, arrays
        try:
            return kind, (names, self.nifti.read(names))
        except Exception as e:  # nibabel raises several types for broken files
            raise ValueError(f"Cannot read NIfTI file {', '.join(map(str, names))}: {e}.") from e

    def get_data(self, img: tuple[str, Any]) -> tuple[np.ndarray, dict]:
        kind, data = img
        if kind == "tiff":
            return self.tiff.get_data(data)
        if kind == "nii":
            names, images = data
            try:  # nibabel reads the voxels lazily, here: a truncated file fails now
                return self.nifti.get_data(images)
            except Exception as e:
                raise ValueError(f"Cannot read NIfTI file {', '.join(map(str, names))}: {e}.") from e
        return _stack_with_meta(data, [-1 if a.ndim == 3 else "no_channel" for a in data])


def image_readers() -> list[ImageReader]:
    """Readers for ``monai.transforms.LoadImage(reader=...)``: one :class:`MicroscopyImageReader`.

    Prefer :class:`~epsseg_monai.transforms.LoadMicroscopyImaged`, which also passes its errors through.
    """
    return [MicroscopyImageReader()]
