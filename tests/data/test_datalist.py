"""Tests of ``epsseg_monai.data.datalist``: pairing images with annotations, splits, intensity statistics."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from epsseg_monai.data import (
    check_validation,
    dataset_splits,
    image_datalist,
    intensity_statistics,
    label_coverage,
    load_intensity_stats,
    save_intensity_stats,
    sparse_datalist,
)


def _write(path: Path, arr: np.ndarray) -> Path:
    """Write ``arr`` in the format given by the suffix of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith((".tif", ".tiff")):
        tifffile.imwrite(path, arr)
    elif name.endswith(".png"):
        Image.fromarray(arr).save(path)
    else:
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return path


def _dataset(root: Path, pairs: dict[str, tuple[str, str]]) -> Path:
    """``root/images/<name><image suffix>`` and ``root/labels/<name><label suffix>`` for each entry of ``pairs``."""
    for name, (img_suffix, lab_suffix) in pairs.items():
        _write(root / "images" / f"{name}{img_suffix}", np.full((4, 5), 7, dtype=np.uint8))
        _write(root / "labels" / f"{name}{lab_suffix}", np.zeros((4, 5), dtype=np.uint8))
    return root


# ------------------------------------------------------------------ sparse_datalist
def test_pairs_by_stem_across_formats(tmp_path: Path) -> None:
    root = _dataset(tmp_path, {"b": (".png", ".tif"), "a": (".tif", ".tiff"), "c": (".nii.gz", ".nii")})
    (root / "images" / "readme.txt").write_text("not an image")
    (root / "labels" / ".hidden.tif").write_bytes(b"")
    items = sparse_datalist(root)
    assert items == [
        {"image": str(root / "images" / "a.tif"), "label": str(root / "labels" / "a.tiff"), "name": "a"},
        {"image": str(root / "images" / "b.png"), "label": str(root / "labels" / "b.tif"), "name": "b"},
        {"image": str(root / "images" / "c.nii.gz"), "label": str(root / "labels" / "c.nii"), "name": "c"},
    ]


def test_custom_subfolder_names(tmp_path: Path) -> None:
    _write(tmp_path / "raw" / "x.tif", np.ones((3, 3), np.uint8))
    _write(tmp_path / "sparse" / "x.tif", np.ones((3, 3), np.uint8))
    items = sparse_datalist(tmp_path, image_dir="raw", label_dir="sparse")
    expected = {"image": str(tmp_path / "raw" / "x.tif"), "label": str(tmp_path / "sparse" / "x.tif"), "name": "x"}
    assert items == [expected]


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sparse_datalist(tmp_path / "nope")


@pytest.mark.parametrize("present, missing", [("images", "labels"), ("labels", "images")])
def test_missing_subfolder(tmp_path: Path, present: str, missing: str) -> None:
    (tmp_path / present).mkdir()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / missing} is missing"):
        sparse_datalist(tmp_path)


def test_image_without_label(tmp_path: Path) -> None:
    root = _dataset(tmp_path, {"a": (".tif", ".tif")})
    _write(root / "images" / "lonely.png", np.ones((3, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="No annotation .*lonely"):
        sparse_datalist(root)


def test_label_without_image(tmp_path: Path) -> None:
    root = _dataset(tmp_path, {"a": (".tif", ".tif")})
    _write(root / "labels" / "orphan.tif", np.ones((3, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="orphan.*have no image"):
        sparse_datalist(root)


def test_empty_images_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(FileNotFoundError, match="No .tif"):
        sparse_datalist(tmp_path)


def test_image_datalist(tmp_path: Path) -> None:
    _write(tmp_path / "b.png", np.ones((3, 3), np.uint8))
    _write(tmp_path / "a.tif", np.ones((3, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("")
    assert image_datalist(tmp_path) == [{"image": str(tmp_path / "a.tif")}, {"image": str(tmp_path / "b.png")}]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No .tif"):
        image_datalist(tmp_path / "empty")


# ------------------------------------------------------------------ dataset_splits
def test_splits_without_val_folder_share_files(tmp_path: Path) -> None:
    root = _dataset(tmp_path, {"a": (".tif", ".tif"), "b": (".tif", ".tif")})
    splits = dataset_splits(root, val_fraction=0.3)
    assert splits["holdout_fraction"] == pytest.approx(0.3)
    assert splits["train"] == sparse_datalist(root)
    assert splits["val"] == splits["train"]
    # copies, so a transform writing into a validation item cannot change the training list
    splits["val"][0]["image"] = "changed"
    assert splits["train"][0]["image"] == str(root / "images" / "a.tif")


def test_splits_with_val_folder(tmp_path: Path) -> None:
    root = _dataset(tmp_path, {"a": (".tif", ".tif"), "b": (".tif", ".tif")})
    _dataset(root / "val", {"v": (".png", ".png")})
    splits = dataset_splits(root, val_fraction=0.3)
    assert splits["holdout_fraction"] == 0.0
    assert [d["name"] for d in splits["train"]] == ["a", "b"]
    assert splits["val"] == [
        {"image": str(root / "val" / "images" / "v.png"), "label": str(root / "val" / "labels" / "v.png"), "name": "v"}
    ]
    # val_fraction is not used with a val/ folder, so any value is accepted
    assert dataset_splits(root, val_fraction=0.0)["holdout_fraction"] == 0.0


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_invalid_val_fraction(tmp_path: Path, fraction: float) -> None:
    root = _dataset(tmp_path, {"a": (".tif", ".tif")})
    with pytest.raises(ValueError, match="val_fraction"):
        dataset_splits(root, val_fraction=fraction)


def test_val_fraction_zero_trains_on_every_click_without_validation(tmp_path: Path) -> None:
    root = _dataset(tmp_path, {"a": (".tif", ".tif"), "b": (".tif", ".tif")})
    splits = dataset_splits(root, val_fraction=0.0)
    assert splits == {"train": sparse_datalist(root), "val": [], "holdout_fraction": 0.0}
    assert check_validation(dataset_splits(root, val_fraction=0.2)) is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_validation(splits, ["train"], calibrate_after_training="false") is False
    # the calibration needs held-out clicks: skipped, with a warning that says how to keep it
    with pytest.warns(UserWarning, match="calibration after training is skipped"):
        assert check_validation(splits, ["train"], calibrate_after_training=True) is False
    # a second phase chooses its model by validation: refused before anything trains
    with pytest.raises(ValueError, match="self_training phase chooses its model by validation"):
        check_validation(splits, ["train", "self_training"])
    # a val/ folder validates whatever --val_fraction says
    _dataset(root / "val", {"v": (".tif", ".tif")})
    assert check_validation(dataset_splits(root, val_fraction=0.0), ["train", "semi_supervised"]) is True


# ------------------------------------------------------------------ intensity statistics
def test_statistics_over_all_pixels_of_several_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (6, 7)).astype(np.uint8)
    b = rng.integers(0, 255, (3, 4)).astype(np.uint8)  # sizes differ: pixels, not images, are weighted equally
    c = rng.normal(100, 20, (5, 5)).astype(np.float32)
    items = [
        {"image": str(_write(tmp_path / "a.tif", a))},
        {"image": str(_write(tmp_path / "b.png", b))},
        {"image": str(_write(tmp_path / "c.nii.gz", c))},
    ]
    stats = intensity_statistics(items)
    pixels = np.concatenate([x.astype(np.float64).ravel() for x in (a, b, c)])
    assert set(stats) == {"mean", "std"}
    np.testing.assert_allclose(stats["mean"], [pixels.mean()], rtol=1e-6)
    np.testing.assert_allclose(stats["std"], [pixels.std()], rtol=1e-6)
    # the mean of per-image means differs, so the check above can tell them apart
    assert abs(np.mean([x.mean() for x in (a, b, c)]) - pixels.mean()) > 1e-3


def test_statistics_are_per_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    imgs = [rng.normal([[[5.0]], [[50.0]]], [[[1.0]], [[9.0]]], (2, 4, 6)).astype(np.float32) for _ in range(2)]
    items = []
    for i, arr in enumerate(imgs):
        path = tmp_path / f"{i}.tif"
        tifffile.imwrite(path, arr, imagej=True, metadata={"axes": "CYX"})
        items.append({"img": str(path)})
    stats = intensity_statistics(items, key="img")
    pixels = np.concatenate([a.astype(np.float64).reshape(2, -1) for a in imgs], axis=1)
    np.testing.assert_allclose(stats["mean"], pixels.mean(1), rtol=1e-6)
    np.testing.assert_allclose(stats["std"], pixels.std(1), rtol=1e-6)
    assert len(stats["mean"]) == len(stats["std"]) == 2


def test_constant_images_are_refused(tmp_path: Path) -> None:
    items = [{"image": str(_write(tmp_path / f"{i}.tif", np.full((4, 4), 9, np.uint8)))} for i in range(2)]
    with pytest.raises(ValueError, match="constant"):
        intensity_statistics(items)


def test_constant_channel_is_refused(tmp_path: Path) -> None:
    arr = np.stack([np.arange(20, dtype=np.float32).reshape(4, 5), np.full((4, 5), 3.0, np.float32)])
    path = tmp_path / "mc.tif"
    tifffile.imwrite(path, arr, imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(ValueError, match="constant"):
        intensity_statistics([{"image": str(path)}])


def test_nan_image_is_refused_by_name(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.tif", np.arange(12, dtype=np.float32).reshape(3, 4))
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    arr[1, 2] = np.nan
    bad = _write(tmp_path / "bad.tif", arr)
    with pytest.raises(ValueError, match=f"{bad} contains NaN"):
        intensity_statistics([{"image": str(good)}, {"image": str(bad)}])


def test_channel_count_mismatch_is_refused(tmp_path: Path) -> None:
    one = _write(tmp_path / "one.tif", np.arange(12, dtype=np.float32).reshape(3, 4))
    two = tmp_path / "two.tif"
    tifffile.imwrite(two, np.arange(24, dtype=np.float32).reshape(2, 3, 4), imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(ValueError, match=r"two.tif has 2 channel\(s\) but .*one.tif has 1: all images need"):
        intensity_statistics([{"image": str(one)}, {"image": str(two)}])


def test_empty_datalist_is_refused() -> None:
    with pytest.raises(ValueError, match="No images"):
        intensity_statistics([])


def test_stats_round_trip(tmp_path: Path) -> None:
    stats = {"mean": [1.5, 2.25], "std": [0.5, 3.0]}
    path = tmp_path / "deep" / "er" / "stats.json"
    assert save_intensity_stats(stats, path) is stats
    assert json.loads(path.read_text()) == stats
    assert load_intensity_stats(path) == stats
    assert load_intensity_stats(str(path)) == stats


def test_load_missing_stats(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "intensity_stats.json"
    with pytest.raises(FileNotFoundError, match=f"{missing} is missing"):
        load_intensity_stats(missing)


def test_load_stats_without_keys(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"mean": [1.0]}))
    with pytest.raises(ValueError, match="'mean' and 'std'"):
        load_intensity_stats(path)


def _coverage_dataset(root: Path, labels: dict[str, np.ndarray], val: dict[str, np.ndarray] | None = None) -> Path:
    for part, maps in (("", labels), ("val", val or {})):
        for name, lab in maps.items():
            _write(root / part / "images" / f"{name}.tif", np.full(lab.shape, 7.0, np.float32))
            _write(root / part / "labels" / f"{name}.tif", lab.astype(np.uint8))
    return root


def test_label_coverage_counts_the_two_shares(tmp_path: Path) -> None:
    lab = np.zeros((20, 20), np.uint8)
    lab.flat[:10], lab.flat[50:55] = 1, 2  # 10 clicks of class 1, 5 of class 2, 5 of class 3
    lab.flat[100:105] = 3
    splits = dataset_splits(_coverage_dataset(tmp_path, {"a": lab}), val_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts = label_coverage(splits, 3, ["x", "y", "z"], seed=0)
    assert counts == {"train": [8, 4, 4], "val": [2, 1, 1]}


def test_label_coverage_warns_for_each_gap(tmp_path: Path) -> None:
    """One click per class: nothing held out (nan validation, model.pt stuck); a class never clicked: named."""
    lab = np.zeros((10, 10), np.uint8)
    lab[0, 0], lab[5, 5] = 1, 2
    splits = dataset_splits(_coverage_dataset(tmp_path, {"a": lab}), val_fraction=0.2)
    with pytest.warns(UserWarning) as record:
        counts = label_coverage(splits, 3, ["x", "y", "z"])
    messages = [str(w.message) for w in record]
    assert counts == {"train": [1, 1, 0], "val": [0, 0, 0]}
    assert any("'z' (id 3) has no click in the training labels" in m for m in messages)
    assert any("No validation point" in m and "model.pt" in m for m in messages)


def test_label_coverage_without_validation_only_checks_training(tmp_path: Path) -> None:
    """--val_fraction 0: every click trains; no warning about validation points that were not asked for."""
    lab = np.zeros((10, 10), np.uint8)
    lab[0, 0], lab[5, 5], lab[7, 7] = 1, 2, 3
    splits = dataset_splits(_coverage_dataset(tmp_path, {"a": lab}), val_fraction=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert label_coverage(splits, 3) == {"train": [1, 1, 1], "val": [0, 0, 0]}
    lab[7, 7] = 0
    splits = dataset_splits(_coverage_dataset(tmp_path, {"a": lab}), val_fraction=0.0)
    with pytest.warns(UserWarning, match="has no click in the training labels"):
        label_coverage(splits, 3)


def test_label_coverage_warns_for_a_class_missing_from_val(tmp_path: Path) -> None:
    lab = np.zeros((10, 10), np.uint8)
    lab.flat[:4], lab.flat[10:14] = 1, 2
    val = np.zeros((10, 10), np.uint8)
    val.flat[:3] = 1
    splits = dataset_splits(_coverage_dataset(tmp_path, {"a": lab}, {"v": val}))
    with pytest.warns(UserWarning, match=r"'2' \(id 2\) has no validation point in the val/ folder"):
        counts = label_coverage(splits, 2)
    assert counts == {"train": [4, 4], "val": [3, 0]}
