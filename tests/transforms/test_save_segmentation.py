"""Tests of ``epsseg_monai.transforms.save_segmentation``: label maps (and probabilities) in the input's format."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage
from PIL import Image

from epsseg_monai.data import image_readers
from epsseg_monai.transforms import (
    SaveSegmentationD,
    SaveSegmentationd,
    SaveSegmentationDict,
    probabilities_to_labels,
)

AFFINE = np.array([[0.5, 0.0, 0.0, 10.0], [0.0, 2.0, 0.0, -3.0], [0.0, 0.0, 3.0, 7.0], [0.0, 0.0, 0.0, 1.0]])


def load(path: Path) -> MetaTensor:
    return LoadImage(reader=image_readers(), image_only=True, ensure_channel_first=True)(str(path))


def probabilities(num_classes: int, spatial: tuple[int, ...], seed: int = 0, unpredicted: int = 3) -> torch.Tensor:
    """Softmax probabilities ``(K, *spatial)`` with ``unpredicted`` pixels set to 0 in every class."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn((num_classes, *spatial), generator=g), dim=0)
    flat = probs.reshape(num_classes, -1)
    flat[:, torch.randperm(flat.shape[1], generator=g)[:unpredicted]] = 0
    return probs


def expected_labels(probs: torch.Tensor) -> np.ndarray:
    p = probs.numpy()
    return np.where(p.sum(0) > 0, p.argmax(0) + 1, 0)


def write_input(path: Path, spatial: tuple[int, ...]) -> Path:
    """An input image of ``spatial`` shape in the format given by the suffix of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.arange(int(np.prod(spatial))) % 200).astype(np.uint8).reshape(spatial)
    if path.name.endswith(".png"):
        Image.fromarray(arr).save(path)
    elif path.name.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(arr.astype(np.float32), AFFINE), str(path))
    else:  # minisblack: tifffile would store a plain (3|4, Y, X) stack as planar RGB(A)
        tifffile.imwrite(path, arr, photometric="minisblack")
    return path


# ------------------------------------------------------------------ probabilities_to_labels
def test_probabilities_to_labels_hand_made() -> None:
    probs = np.zeros((3, 2, 3), dtype=np.float32)
    probs[:, 0, 0] = [0.7, 0.2, 0.1]
    probs[:, 0, 1] = [0.1, 0.2, 0.7]
    probs[:, 0, 2] = [0.2, 0.5, 0.3]
    probs[:, 1, 0] = [0.0, 0.0, 1e-6]  # a tiny probability still counts as predicted
    # (1, 1) and (1, 2): all zero, not predicted
    labels = probabilities_to_labels(probs)
    np.testing.assert_array_equal(labels, [[1, 3, 2], [3, 0, 0]])
    assert labels.dtype == np.uint8


def test_probabilities_to_labels_torch_and_many_classes() -> None:
    probs = probabilities(4, (5, 6))
    labels = probabilities_to_labels(probs)
    assert isinstance(labels, np.ndarray)
    np.testing.assert_array_equal(labels, expected_labels(probs))
    assert (labels == 0).sum() == 3
    many = torch.zeros((300, 2, 2))
    many[299, 0, 0] = 1.0
    many[5, 1, 1] = 1.0
    out = probabilities_to_labels(many)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[300, 0], [0, 6]])


# ------------------------------------------------------------------ SaveSegmentationd
@pytest.mark.parametrize("name", ["img.tif", "img.tiff", "img.png"])
def test_label_map_for_2d_inputs(tmp_path: Path, name: str) -> None:
    src = write_input(tmp_path / "in" / name, (5, 7))
    image = load(src)
    probs = probabilities(3, (5, 7))
    data = {"image": image, "pred": probs}
    out = SaveSegmentationd("pred", output_dir=str(tmp_path / "out"))(data)
    assert out["pred"] is probs and out["image"] is image
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img.tif"]
    written = tifffile.imread(tmp_path / "out" / "img.tif")
    assert written.shape == (5, 7) and written.dtype == np.uint8
    np.testing.assert_array_equal(written, expected_labels(probs))
    # the label map overlays the input: same orientation as the input read by its own library
    reference = np.asarray(Image.open(src)) if name.endswith(".png") else tifffile.imread(src)
    assert written.shape == reference.shape


@pytest.mark.parametrize("spatial", [(4, 5, 6), (3, 5, 6), (7, 5, 6)])
def test_label_map_for_3d_volume(tmp_path: Path, spatial: tuple[int, ...]) -> None:
    src = write_input(tmp_path / "vol.tif", spatial)
    image = load(src)
    assert tuple(image.shape) == (1, *spatial)
    probs = probabilities(3, spatial)
    SaveSegmentationd("pred", output_dir=str(tmp_path / "out"))({"image": image, "pred": probs})
    written = tifffile.imread(tmp_path / "out" / "vol.tif")
    assert written.shape == spatial
    np.testing.assert_array_equal(written, expected_labels(probs))
    # 3 or 4 slices must not come back as RGB(A) channels
    back = load(tmp_path / "out" / "vol.tif")
    assert tuple(back.shape) == (1, *spatial)
    np.testing.assert_array_equal(back[0].numpy(), expected_labels(probs))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_input_keeps_affine(tmp_path: Path, suffix: str) -> None:
    src = write_input(tmp_path / f"vol{suffix}", (4, 5, 6))
    image = load(src)
    probs = probabilities(3, (4, 5, 6))
    saver = SaveSegmentationd("pred", output_dir=str(tmp_path / "out"), save_probabilities=True)
    saver({"image": image, "pred": probs})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vol.nii.gz", "vol_prob.nii.gz"]
    seg = nib.load(str(tmp_path / "out" / "vol.nii.gz"))
    np.testing.assert_allclose(seg.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), expected_labels(probs))
    prob = nib.load(str(tmp_path / "out" / "vol_prob.nii.gz"))
    np.testing.assert_allclose(prob.affine, AFFINE)
    # read back by the package's readers: channel first again, same values
    back = load(tmp_path / "out" / "vol_prob.nii.gz")
    assert tuple(back.shape) == (3, 4, 5, 6)
    np.testing.assert_allclose(back.numpy(), probs.numpy())


@pytest.mark.parametrize("name, spatial", [("img.tif", (5, 7)), ("img.png", (5, 7)), ("vol.tif", (4, 5, 6))])
def test_probabilities_tiff(tmp_path: Path, name: str, spatial: tuple[int, ...]) -> None:
    src = write_input(tmp_path / name, spatial)
    probs = probabilities(3, spatial)
    saver = SaveSegmentationd("pred", output_dir=str(tmp_path / "out"), save_probabilities=True)
    saver({"image": load(src), "pred": probs})
    stem = name.split(".")[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{stem}.tif", f"{stem}_prob.tif"]
    back = load(tmp_path / "out" / f"{stem}_prob.tif")
    assert tuple(back.shape) == (3, *spatial)
    np.testing.assert_allclose(back.numpy(), probs.numpy())
    assert tifffile.imread(tmp_path / "out" / f"{stem}_prob.tif").dtype == np.float32


def test_several_keys_write_several_maps_of_one_name(tmp_path: Path) -> None:
    """Every key writes ``<stem>.tif``: the last key's map is the one on disk."""
    src = write_input(tmp_path / "img.tif", (5, 7))
    first, second = probabilities(3, (5, 7), seed=1), probabilities(3, (5, 7), seed=2)
    SaveSegmentationd(["a", "b"], output_dir=str(tmp_path / "out"))({"image": load(src), "a": first, "b": second})
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "img.tif"), expected_labels(second))


@pytest.mark.parametrize("name", ["img.tif", "vol.nii.gz"])
def test_refuses_to_overwrite_the_input(tmp_path: Path, name: str) -> None:
    spatial = (5, 7) if name.endswith(".tif") else (4, 5, 6)
    src = write_input(tmp_path / name, spatial)
    before = src.read_bytes()
    image = load(src)
    with pytest.raises(FileExistsError, match=f"overwrite the input image {src}"):
        SaveSegmentationd("pred", output_dir=str(tmp_path))({"image": image, "pred": probabilities(3, spatial)})
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_png_input_in_output_dir_is_kept(tmp_path: Path) -> None:
    """A PNG input's label map is ``<stem>.tif``: writing it next to the input does not touch the input."""
    src = write_input(tmp_path / "img.png", (5, 7))
    before = src.read_bytes()
    probs = probabilities(2, (5, 7))
    SaveSegmentationd("pred", output_dir=str(tmp_path))({"image": load(src), "pred": probs})
    assert src.read_bytes() == before
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "img.tif"), expected_labels(probs))


def test_missing_file_name(tmp_path: Path) -> None:
    probs = probabilities(3, (5, 7))
    saver = SaveSegmentationd("pred", output_dir=str(tmp_path / "out"))
    with pytest.raises(KeyError, match="filename_or_obj"):
        saver({"image": torch.zeros((1, 5, 7)), "pred": probs})
    with pytest.raises(KeyError, match="filename_or_obj"):
        saver({"image": MetaTensor(torch.zeros((1, 5, 7))), "pred": probs})
    with pytest.raises(KeyError, match="filename_or_obj"):
        saver({"pred": probs})
    assert not (tmp_path / "out").exists()


def test_image_key_and_aliases(tmp_path: Path) -> None:
    src = write_input(tmp_path / "x.tif", (5, 7))
    probs = probabilities(3, (5, 7))
    assert SaveSegmentationD is SaveSegmentationd and SaveSegmentationDict is SaveSegmentationd
    SaveSegmentationD("seg", output_dir=str(tmp_path / "out"), image_key="img")({"img": load(src), "seg": probs})
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "x.tif"), expected_labels(probs))
