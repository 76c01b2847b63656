"""Tests of ``epsseg_monai.data.image_io``: the tifffile reader behind ``LoadImage`` and the file-name helpers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from monai.transforms import LoadImage
from PIL import Image

from epsseg_monai.data import (
    IMAGE_SUFFIXES,
    TiffFileReader,
    image_stem,
    image_suffix,
    is_nifti,
    list_images,
)
from epsseg_monai.transforms import LoadMicroscopyImage


@pytest.fixture
def load() -> LoadImage:
    """The loader the bundle uses: the package's reader chosen by suffix, channel first, image only."""
    return LoadMicroscopyImage()


def _ramp(shape: tuple[int, ...], dtype: type = np.uint16) -> np.ndarray:
    """An array whose values are their flat index: any transpose or flip changes it."""
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_2d_tiff_equals_tifffile_imread(tmp_path: Path, load: LoadImage, dtype: type) -> None:
    arr = (_ramp((5, 7), np.uint16) % 200).astype(dtype)  # non-square: a transpose changes the shape
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, arr)
    img = load(str(path))
    assert tuple(img.shape) == (1, 5, 7)
    np.testing.assert_array_equal(np.asarray(img[0]), tifffile.imread(path))
    assert img.meta["filename_or_obj"] == str(path)


@pytest.mark.parametrize("compression", ["lzw", "zlib"])
def test_compressed_tiff_from_fiji_is_read(tmp_path: Path, load: LoadImage, compression: str) -> None:
    """Fiji saves LZW/Deflate TIFFs; tifffile decodes them with imagecodecs, a dependency of the package."""
    arr = _ramp((30, 41)) % 4000
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(path, arr, compression=compression, imagej=True)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression != 1, "the file was written uncompressed: the test would prove nothing"
    img = load(str(path))
    assert tuple(img.shape) == (1, 30, 41)
    np.testing.assert_array_equal(np.asarray(img[0]), arr)


def test_tiff_suffix_variants_are_read(tmp_path: Path, load: LoadImage) -> None:
    arr = _ramp((4, 6))
    for name in ("a.tiff", "b.TIF"):
        tifffile.imwrite(tmp_path / name, arr)
        np.testing.assert_array_equal(np.asarray(load(str(tmp_path / name))[0]), arr)


@pytest.mark.parametrize("depth, kwargs", [(6, {}), (3, {"photometric": "minisblack"})])
def test_plain_3d_stack_is_a_single_channel_volume(tmp_path: Path, load: LoadImage, depth: int, kwargs: dict) -> None:
    # tifffile stores a plain (3|4, Y, X) array as planar RGB(A) unless told "minisblack": that file has channels
    arr = _ramp((depth, 5, 7))  # Z, Y, X without axes metadata
    path = tmp_path / "vol.tif"
    tifffile.imwrite(path, arr, **kwargs)
    img = load(str(path))
    assert tuple(img.shape) == (1, depth, 5, 7)
    np.testing.assert_array_equal(np.asarray(img[0]), arr)


def test_imagej_multichannel_is_channel_first(tmp_path: Path, load: LoadImage) -> None:
    arr = _ramp((2, 5, 7)).astype(np.float32)
    path = tmp_path / "mc.tif"
    tifffile.imwrite(path, arr, imagej=True, metadata={"axes": "CYX"})
    img = load(str(path))
    assert tuple(img.shape) == (2, 5, 7)
    np.testing.assert_array_equal(np.asarray(img), arr)


def test_imagej_multichannel_volume_is_channel_first(tmp_path: Path, load: LoadImage) -> None:
    arr = _ramp((3, 2, 5, 7)).astype(np.float32)  # ImageJ order Z, C, Y, X
    path = tmp_path / "mcv.tif"
    tifffile.imwrite(path, arr, imagej=True, metadata={"axes": "ZCYX"})
    img = load(str(path))
    assert tuple(img.shape) == (2, 3, 5, 7)
    np.testing.assert_array_equal(np.asarray(img), np.moveaxis(arr, 1, 0))


def test_rgb_tiff_samples_are_channels(tmp_path: Path, load: LoadImage) -> None:
    arr = (_ramp((5, 7, 3)) % 251).astype(np.uint8)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, arr, photometric="rgb")
    img = load(str(path))
    assert tuple(img.shape) == (3, 5, 7)
    np.testing.assert_array_equal(np.asarray(img), np.moveaxis(arr, -1, 0))


def test_channel_dim_override(tmp_path: Path) -> None:
    arr = _ramp((2, 5, 7))
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, arr)
    load = LoadImage(reader=TiffFileReader(channel_dim=0), image_only=True, ensure_channel_first=True)
    img = load(str(path))
    assert tuple(img.shape) == (2, 5, 7)
    np.testing.assert_array_equal(np.asarray(img), arr)


def test_png_has_pil_orientation(tmp_path: Path, load: LoadImage) -> None:
    arr = (_ramp((5, 7)) % 251).astype(np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(arr).save(path)
    img = load(str(path))
    assert tuple(img.shape) == (1, 5, 7)
    np.testing.assert_array_equal(np.asarray(img[0]), np.asarray(Image.open(path)))


def test_rgb_png_is_channel_first(tmp_path: Path, load: LoadImage) -> None:
    arr = (_ramp((5, 7, 3)) % 251).astype(np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(arr).save(path)
    img = load(str(path))
    assert tuple(img.shape) == (3, 5, 7)
    np.testing.assert_array_equal(np.asarray(img), np.moveaxis(np.asarray(Image.open(path)), -1, 0))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip(tmp_path: Path, load: LoadImage, suffix: str) -> None:
    arr = _ramp((4, 5, 6)).astype(np.float32)
    affine = np.array([[2.0, 0, 0, 1], [0, 3.0, 0, 2], [0, 0, 4.0, 3], [0, 0, 0, 1]])
    path = tmp_path / f"vol{suffix}"
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    img = load(str(path))
    assert tuple(img.shape) == (1, 4, 5, 6)
    np.testing.assert_array_equal(np.asarray(img[0]), np.asarray(nib.load(str(path)).dataobj))
    np.testing.assert_allclose(np.asarray(img.meta["original_affine"]), affine)


def _corrupt_tiffs(tmp_path: Path) -> list[Path]:
    """A TIFF cut after its header (data missing) and one whose header is garbage."""
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, (_ramp((64, 64)) % 251).astype(np.uint8))
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(raw[: len(raw) // 2])
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(raw[:8] + np.random.default_rng(0).bytes(200))
    return [truncated, garbage]


def test_corrupt_tiff_reader_error_names_the_file(tmp_path: Path) -> None:
    for path in _corrupt_tiffs(tmp_path):
        with pytest.raises(ValueError, match=f"Cannot read TIFF file {path}"):
            TiffFileReader().read(str(path))


def test_garbage_tiff_load_error_names_the_file(tmp_path: Path, load: LoadImage) -> None:
    """The message ``LoadImage`` shows for a TIFF with a broken header says which file and why."""
    path = _corrupt_tiffs(tmp_path)[1]
    with pytest.raises(ValueError) as info:
        load(str(path))
    assert str(path) in str(info.value)
    assert f"Cannot read TIFF file {path}" in str(info.value)


def test_truncated_tiff_through_load_image_raises_value_error_naming_file(tmp_path: Path, load: LoadImage) -> None:
    path = _corrupt_tiffs(tmp_path)[0]
    with pytest.raises(ValueError, match=str(path)):
        load(str(path))


def test_garbage_tiff_through_load_image_raises_value_error_naming_file(tmp_path: Path, load: LoadImage) -> None:
    path = _corrupt_tiffs(tmp_path)[1]
    with pytest.raises(ValueError, match=str(path)):
        load(str(path))


def test_reader_verify_suffix() -> None:
    reader = TiffFileReader()
    assert reader.verify_suffix("a/b.tif") and reader.verify_suffix("B.TIFF")
    assert reader.verify_suffix(["a.tif", "b.tiff"])
    assert not reader.verify_suffix("a.png")
    assert not reader.verify_suffix(["a.tif", "b.png"])


@pytest.mark.parametrize(
    "path, stem, suffix, nifti",
    [
        ("a/b/07.nii.gz", "07", ".nii.gz", True),
        ("a/b/07.nii", "07", ".nii", True),
        ("x.TIF", "x", ".tif", False),
        ("dir/x.tiff", "x", ".tiff", False),
        ("cells.ome.tif", "cells", ".tif", False),
        ("d/Cells.OME.TIFF", "Cells", ".tiff", False),
        ("cells.ome.png", "cells.ome", ".png", False),
        ("img.01.png", "img.01", ".png", False),
        ("notes.txt", "notes", "", False),
        ("archive.gz", "archive", "", False),
    ],
)
def test_name_helpers(path: str, stem: str, suffix: str, nifti: bool) -> None:
    assert image_stem(path) == stem
    assert image_suffix(path) == suffix
    assert is_nifti(path) is nifti
    assert image_stem(Path(path)) == stem


def test_suffixes_longest_first() -> None:
    assert IMAGE_SUFFIXES.index(".nii.gz") < IMAGE_SUFFIXES.index(".nii")
    assert IMAGE_SUFFIXES.index(".tiff") < IMAGE_SUFFIXES.index(".tif")


def test_list_images_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ("b.tif", "a.png", "c.nii.gz", "10.tiff", "2.tif", "notes.txt", "x.gz", ".hidden.tif", "._a.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.tif").mkdir()  # a folder with an image-like name is not an image
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "d.tif").write_bytes(b"")  # not recursive
    assert [p.name for p in list_images(tmp_path)] == ["10.tiff", "2.tif", "a.png", "b.tif", "c.nii.gz"]
    assert all(p.parent == tmp_path for p in list_images(str(tmp_path)))


def test_list_images_empty_folder(tmp_path: Path) -> None:
    assert list_images(tmp_path) == []


@pytest.mark.parametrize("names", [("a.tif", "a.png"), ("a.nii", "a.nii.gz"), ("a.tif", "a.TIFF")])
def test_list_images_same_stem_raises(tmp_path: Path, names: tuple[str, str]) -> None:
    for name in names:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match="same name"):
        list_images(tmp_path)


def test_list_images_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        list_images(missing)
    (tmp_path / "file.tif").write_bytes(b"")
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "file.tif")


@pytest.mark.parametrize("suffix", [".png", ".nii.gz"])
def test_corrupt_png_and_nifti_errors_name_the_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    if suffix == ".png":
        Image.fromarray(_ramp((20, 30), np.uint8)).save(path)
    else:
        nib.save(nib.Nifti1Image(_ramp((20, 30, 4), np.float32), np.eye(4)), str(path))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncate
    with pytest.raises(ValueError, match=f"Cannot read .*{path.name}"):
        LoadMicroscopyImage()(str(path))


def test_unsupported_suffix_is_refused_with_the_supported_list(tmp_path: Path) -> None:
    path = tmp_path / "image.jpg"
    path.write_bytes(b"\xff\xd8")
    with pytest.raises(ValueError, match=r"supported are .*\.tif"):
        LoadMicroscopyImage()(str(path))
