"""Tests of ``epsseg_monai.transforms.save_segmentation``: label maps, probabilities, entropy and overlay outputs."""

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
from epsseg_monai.transforms.overlay import PALETTE, grey_image, label_overlay

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


# ------------------------------------------------------------------ uncertainty and overlay outputs
def entropy(probs: torch.Tensor) -> np.ndarray:
    """Normalised class entropy of ``(K, *spatial)`` probabilities, computed independently (0 log 0 = 0)."""
    p = probs.double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(0) / np.log(p.shape[0])


@pytest.mark.parametrize("name, spatial", [("img.tif", (5, 7)), ("img.png", (5, 7)), ("vol.tif", (4, 5, 6))])
def test_uncertainty_tiff(tmp_path: Path, name: str, spatial: tuple[int, ...]) -> None:
    src = write_input(tmp_path / name, spatial)
    probs = probabilities(3, spatial)
    probs.reshape(3, -1)[:, 1] = 1 / 3  # one uniform pixel (maximal uncertainty)
    probs.reshape(3, -1)[:, 2] = torch.tensor([0.0, 1.0, 0.0])  # one certain pixel
    SaveSegmentationd("pred", output_dir=str(tmp_path / "out"), save_uncertainty=True)(
        {"image": load(src), "pred": probs}
    )
    stem = name.split(".")[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{stem}.tif", f"{stem}_entropy.tif"]
    written = tifffile.imread(tmp_path / "out" / f"{stem}_entropy.tif")
    assert written.shape == spatial and written.dtype == np.float32
    assert (written >= 0).all() and (written <= 1 + 1e-6).all()
    np.testing.assert_allclose(written, entropy(probs), rtol=1e-5, atol=1e-6)
    flat = written.reshape(-1)
    np.testing.assert_allclose(flat[1], 1.0, rtol=1e-6)
    assert flat[2] == 0.0
    assert len(np.unique(flat)) > flat.size // 2  # a real map, not a constant
    # the label map is written as without the option
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / f"{stem}.tif"), expected_labels(probs))


def test_uniform_probabilities_give_entropy_one(tmp_path: Path) -> None:
    src = write_input(tmp_path / "img.tif", (5, 7))
    probs = torch.full((4, 5, 7), 0.25)
    SaveSegmentationd("pred", output_dir=str(tmp_path / "out"), save_uncertainty=True)(
        {"image": load(src), "pred": probs}
    )
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out" / "img_entropy.tif"), np.ones((5, 7)), rtol=1e-6)


def test_uncertainty_nifti_keeps_affine(tmp_path: Path) -> None:
    src = write_input(tmp_path / "vol.nii.gz", (4, 5, 6))
    probs = probabilities(3, (4, 5, 6))
    saver = SaveSegmentationd("pred", output_dir=str(tmp_path / "out"), save_probabilities=True, save_uncertainty=True)
    saver({"image": load(src), "pred": probs})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "vol.nii.gz",
        "vol_entropy.nii.gz",
        "vol_prob.nii.gz",
    ]
    ent = nib.load(str(tmp_path / "out" / "vol_entropy.nii.gz"))
    np.testing.assert_allclose(ent.affine, AFFINE)
    assert ent.get_data_dtype() == np.float32 and ent.shape == (4, 5, 6)
    np.testing.assert_allclose(np.asarray(ent.dataobj), entropy(probs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["img.tif", "img.png"])
def test_overlay_png_for_2d_inputs(tmp_path: Path, name: str) -> None:
    src = write_input(tmp_path / name, (5, 7))
    image = load(src)
    probs = probabilities(3, (5, 7))
    SaveSegmentationd("pred", output_dir=str(tmp_path / "out"), save_overlay=True)({"image": image, "pred": probs})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img.tif", "img_overlay.png"]
    with Image.open(tmp_path / "out" / "img_overlay.png") as png:
        assert png.mode == "RGB" and png.size == (7, 5)  # width, height of the input
        overlay = np.asarray(png)
    labels = expected_labels(probs)
    np.testing.assert_array_equal(overlay, label_overlay(image, labels))
    # unpredicted pixels show the input in grey (as read by its own library), predicted ones their class colour
    reference = np.asarray(Image.open(src)) if name.endswith(".png") else tifffile.imread(src)
    grey = grey_image(reference)
    unlabelled = labels == 0
    assert unlabelled.sum() == 3
    for c in range(3):
        np.testing.assert_array_equal(overlay[..., c][unlabelled], grey[unlabelled])
    r, c = np.argwhere(labels == 2)[0]
    expected = np.round(0.6 * float(grey[r, c]) + 0.4 * PALETTE[1].astype(np.float32)).astype(np.uint8)
    np.testing.assert_array_equal(overlay[r, c], expected)


@pytest.mark.parametrize("name", ["vol.tif", "vol.nii.gz"])
def test_no_overlay_for_3d_inputs(tmp_path: Path, name: str) -> None:
    src = write_input(tmp_path / name, (4, 5, 6))
    probs = probabilities(3, (4, 5, 6))
    SaveSegmentationd("pred", output_dir=str(tmp_path / "out"), save_overlay=True)({"image": load(src), "pred": probs})
    ext = ".nii.gz" if name.endswith(".nii.gz") else ".tif"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"vol{ext}"]


def test_all_outputs_together(tmp_path: Path) -> None:
    src = write_input(tmp_path / "img.png", (5, 7))
    saver = SaveSegmentationd(
        "pred", output_dir=str(tmp_path / "out"), save_probabilities=True, save_uncertainty=True, save_overlay=True
    )
    saver({"image": load(src), "pred": probabilities(3, (5, 7))})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "img.tif",
        "img_entropy.tif",
        "img_overlay.png",
        "img_prob.tif",
    ]


def test_existing_outputs_are_refused_unless_overwrite(tmp_path: Path) -> None:
    """A second run into the same folder names the existing file and the flag; ``overwrite=True`` replaces it."""
    src = tmp_path / "in" / "a.tif"
    src.parent.mkdir()
    tifffile.imwrite(src, np.zeros((6, 7), np.float32))
    out = tmp_path / "out"
    SaveSegmentationd("pred", str(out))({"image": load(src), "pred": probabilities(3, (6, 7), seed=0)})
    first = tifffile.imread(out / "a.tif")
    again = {"image": load(src), "pred": probabilities(3, (6, 7), seed=1)}
    with pytest.raises(FileExistsError, match=r"a\.tif already exists.*--overwrite true"):
        SaveSegmentationd("pred", str(out)).check_outputs([src])
    with pytest.raises(FileExistsError, match="--overwrite true"):
        SaveSegmentationd("pred", str(out))(again)
    np.testing.assert_array_equal(tifffile.imread(out / "a.tif"), first)
    SaveSegmentationd("pred", str(out), overwrite=True).check_outputs([src])
    SaveSegmentationd("pred", str(out), overwrite=True)(again)
    assert not np.array_equal(tifffile.imread(out / "a.tif"), first)


def test_check_outputs_counts_every_optional_file(tmp_path: Path) -> None:
    src = tmp_path / "in" / "a.nii.gz"
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_entropy.nii.gz").write_bytes(b"earlier")
    SaveSegmentationd("pred", str(out), save_probabilities=True).check_outputs([src])  # entropy not written
    with pytest.raises(FileExistsError, match="a_entropy.nii.gz"):
        SaveSegmentationd("pred", str(out), save_uncertainty=True).check_outputs([src])
    assert [p.name for p in SaveSegmentationd(
        "pred", str(out), save_probabilities=True, save_uncertainty=True, save_overlay=True
    ).output_paths(src)] == [
        "a.nii.gz", "a_prob.nii.gz", "a_entropy.nii.gz", "a_overlay.png"
    ]  # fmt: skip


@pytest.mark.parametrize("target", ["images", "labels"])
def test_check_outputs_refuses_image_and_label_folders(tmp_path: Path, target: str) -> None:
    """The input folder and the ``labels`` folder beside it hold the user's data: refused even with overwrite,
    and even when no file of the same name exists there yet."""
    src = tmp_path / "data" / "images" / "a.tif"
    saver = SaveSegmentationd("pred", str(tmp_path / "data" / target), overwrite=True)
    with pytest.raises(FileExistsError, match="Choose another --output_dir"):
        saver.check_outputs([src], [src.parent])


def test_check_outputs_refuses_two_inputs_with_one_output(tmp_path: Path) -> None:
    srcs = [tmp_path / "in" / "a.tif", tmp_path / "in" / "a.png"]
    with pytest.raises(FileExistsError, match="would both be written to"):
        SaveSegmentationd("pred", str(tmp_path / "out")).check_outputs(srcs)
