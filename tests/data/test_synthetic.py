from __future__ import annotations

import functools
import json
import os

import numpy as np
import pytest
import tifffile

import epsseg_monai
from epsseg_monai.data.synthetic import (
    CLASS_NAMES,
    default_dataset_dir,
    make_synthetic_dataset,
    sparse_points,
    synthetic_em,
)

#: EM-like pixel shares (fractions) per class at 256²
SHARES = {1: (0.50, 0.75), 2: (0.12, 0.25), 3: (0.04, 0.12), 4: (0.03, 0.20)}


@functools.cache
def em(shape: tuple[int, ...] = (256, 256), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cached :func:`synthetic_em` (the tests only read the arrays)."""
    return synthetic_em(shape, seed)


def mean_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    dice = [2 * np.sum((pred == c) & (truth == c)) / (np.sum(pred == c) + np.sum(truth == c)) for c in CLASS_NAMES]
    return float(np.mean(dice))


def intensity_baseline_dice(image: np.ndarray, labels: np.ndarray) -> float:
    """Best mean Dice of two per-intensity classifiers fitted on the dense labels themselves (an upper bound for
    any 1-D intensity-interval rule of these kinds): each grey value gets its majority class, or the class whose
    intensity histogram (normalised per class) is highest there."""
    hist = np.zeros((256, max(CLASS_NAMES) + 1))
    np.add.at(hist, (image.ravel(), labels.ravel()), 1)
    majority = hist.argmax(1)
    balanced = (hist / np.maximum(hist.sum(0, keepdims=True), 1)).argmax(1)
    return max(mean_dice(table[image], labels) for table in (majority, balanced))


# --------------------------------------------------------------------------------------------------------------------
# synthetic_em
# --------------------------------------------------------------------------------------------------------------------


def test_same_seed_same_image_other_seed_other_image():
    image, labels = synthetic_em((128, 128), seed=3)
    again, again_labels = synthetic_em((128, 128), seed=3)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(labels, again_labels)
    other, other_labels = synthetic_em((128, 128), seed=4)
    assert np.mean(image != other) > 0.5
    assert np.mean(labels != other_labels) > 0.1


@pytest.mark.parametrize("shape", [(256, 256), (96, 160), (48, 48, 48), (32, 40, 36)])
def test_shapes_dtypes_and_classes(shape):
    image, labels = em(shape)
    assert image.shape == labels.shape == shape
    assert image.dtype == labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(CLASS_NAMES)  # every pixel labelled, all four classes present
    assert image.std() > 10  # not blank


@pytest.mark.parametrize("seed", range(5))
def test_class_shares_are_em_like(seed):
    _, labels = em((256, 256), seed)
    shares = np.bincount(labels.ravel(), minlength=5) / labels.size
    assert shares[0] == 0
    for cls, (lo, hi) in SHARES.items():
        assert lo <= shares[cls] <= hi, f"{CLASS_NAMES[cls]} share {shares[cls]:.3f} outside [{lo}, {hi}]"


def test_all_classes_at_the_smallest_guaranteed_sizes():
    for seed in range(8):
        for shape in ((128, 128), (32, 32, 32)):
            _, labels = em(shape, seed)
            assert set(np.unique(labels)) == set(CLASS_NAMES), (shape, seed)


def test_intensity_alone_does_not_solve_the_task():
    # a classifier that sees one pixel's intensity, fitted on the very labels it is scored on, stays far from
    # perfect; the classes differ by shape and context (measured: about 0.5)
    scores = [intensity_baseline_dice(*em((256, 256), seed)) for seed in range(3)]
    assert max(scores) < 0.7, scores
    assert min(scores) > 0.2, scores  # ... but the image is not noise either


def test_cells_are_the_requested_size():
    # ~40-60 px cells in 2D at 256²: count the membrane-enclosed regions that do not touch the border
    from scipy import ndimage

    _, labels = em((256, 256), 0)
    regions, n = ndimage.label(labels != 2)
    sizes = np.bincount(regions.ravel())
    inner = [
        i + 1 for i, sl in enumerate(ndimage.find_objects(regions)) if all(0 < s.start and s.stop < 256 for s in sl)
    ]
    diameters = 2 * np.sqrt(sizes[inner] / np.pi)
    assert 30 <= np.median(diameters) <= 60


def test_invalid_shapes_are_refused():
    for shape in [(8, 256), (256,), (16, 16, 16, 16)]:
        with pytest.raises(ValueError, match="2D or 3D"):
            synthetic_em(shape)


# --------------------------------------------------------------------------------------------------------------------
# sparse_points
# --------------------------------------------------------------------------------------------------------------------


def test_sparse_points_are_a_subset_with_n_points_per_class():
    _, dense = em((256, 256), 0)
    sparse = sparse_points(dense, 50, seed=1)
    assert sparse.shape == dense.shape and sparse.dtype == np.uint8
    labelled = sparse > 0
    np.testing.assert_array_equal(sparse[labelled], dense[labelled])
    assert {c: int(np.sum(sparse == c)) for c in CLASS_NAMES} == {c: 50 for c in CLASS_NAMES}
    np.testing.assert_array_equal(sparse, sparse_points(dense, 50, seed=1))
    assert not np.array_equal(sparse, sparse_points(dense, 50, seed=2))


def test_sparse_points_take_all_pixels_of_a_small_class():
    dense = np.ones((20, 30), dtype=np.uint8)
    dense[3, 4] = 3
    dense[5:7, 8] = 2
    sparse = sparse_points(dense, 10, seed=0)
    assert np.sum(sparse == 1) == 10 and np.sum(sparse == 2) == 2 and np.sum(sparse == 3) == 1
    assert not sparse_points(dense, 0).any()


# --------------------------------------------------------------------------------------------------------------------
# make_synthetic_dataset
# --------------------------------------------------------------------------------------------------------------------

SMALL = dict(num_train=2, num_val=1, shape=(64, 64), points_per_class=5, seed=7)


def files_of(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_dataset_layout_and_metadata(tmp_path):
    root = make_synthetic_dataset(tmp_path / "ds", **SMALL)
    assert root == tmp_path / "ds"
    train = [f"{sub}/synth_{i:02d}.tif" for sub in ("ground_truth", "images", "labels") for i in range(2)]
    val = [f"val/{sub}/synth_val_00.tif" for sub in ("ground_truth", "images", "labels")]
    assert files_of(root) == sorted(["dataset.json", *train, *val])

    meta = json.loads((root / "dataset.json").read_text())
    assert meta["epsseg_monai_version"] == epsseg_monai.__version__
    assert meta["class_names"] == {str(k): v for k, v in CLASS_NAMES.items()}
    params = meta["parameters"]
    assert {k: params[k] for k in ("num_train", "num_val", "points_per_class", "seed")} == {
        "num_train": 2,
        "num_val": 1,
        "points_per_class": 5,
        "seed": 7,
    }
    assert params["shape"] == [64, 64]
    seeds = [e["seed"] for e in meta["images"]["train"] + meta["images"]["val"]]
    assert len(set(seeds)) == 3

    for stem in ("synth_00", "synth_01", "val/synth_val_00"):
        folder, _, name = stem.rpartition("/")
        base = root / folder
        image = tifffile.imread(base / "images" / f"{name}.tif")
        sparse = tifffile.imread(base / "labels" / f"{name}.tif")
        dense = tifffile.imread(base / "ground_truth" / f"{name}.tif")
        assert image.dtype == sparse.dtype == dense.dtype == np.uint8
        assert image.shape == sparse.shape == dense.shape == (64, 64)
        assert np.array_equal(sparse[sparse > 0], dense[sparse > 0])
        assert all(np.sum(sparse == c) == min(5, np.sum(dense == c)) for c in CLASS_NAMES)
        entry = next(e for e in meta["images"]["val" if folder else "train"] if e["name"] == name)
        np.testing.assert_array_equal(image, synthetic_em((64, 64), entry["seed"])[0])  # reproducible from its seed
    images = [tifffile.imread(p) for p in sorted(root.rglob("images/*.tif"))]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[0], images[2])


def test_dataset_is_idempotent(tmp_path):
    root = make_synthetic_dataset(tmp_path / "ds", **SMALL)
    for p in root.rglob("*"):
        os.utime(p, ns=(0, 0))  # any rewrite now shows, whatever the file system's timestamp resolution
    before = mtimes(root)
    assert make_synthetic_dataset(tmp_path / "ds", **SMALL) == root
    assert mtimes(root) == before


def test_dataset_regenerates_on_parameter_change(tmp_path):
    root = make_synthetic_dataset(tmp_path / "ds", **SMALL)
    make_synthetic_dataset(root, **{**SMALL, "num_train": 1, "points_per_class": 9})
    assert "images/synth_01.tif" not in files_of(root)  # stale files of the larger set are gone
    assert json.loads((root / "dataset.json").read_text())["parameters"]["points_per_class"] == 9
    sparse = tifffile.imread(root / "labels" / "synth_00.tif")
    assert np.sum(sparse > 0) == 4 * 9


def test_dataset_redone_after_an_interrupted_run(tmp_path):
    root = make_synthetic_dataset(tmp_path / "ds", **SMALL)
    (root / "dataset.json").unlink()  # written last: missing means the run did not finish
    (root / "images" / "synth_01.tif").write_bytes(b"torn")
    make_synthetic_dataset(root, **SMALL)
    assert (root / "dataset.json").is_file()
    assert tifffile.imread(root / "images" / "synth_01.tif").shape == (64, 64)
    (root / "val" / "labels" / "synth_val_00.tif").unlink()  # a missing file also triggers regeneration
    make_synthetic_dataset(root, **SMALL)
    assert (root / "val" / "labels" / "synth_val_00.tif").is_file()


def test_dataset_never_clobbers_foreign_files(tmp_path):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "images" / "cells.tif").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True") as err:
        make_synthetic_dataset(root, **SMALL)
    assert str(root) in str(err.value) and "cells.tif" in str(err.value)
    assert files_of(root) == ["images/cells.tif"]

    make_synthetic_dataset(root, **SMALL, overwrite=True)  # writes next to the foreign file, keeps it
    assert (root / "images" / "cells.tif").read_bytes() == b"precious"
    assert (root / "dataset.json").is_file()
    before = mtimes(root)
    make_synthetic_dataset(root, **SMALL)  # complete and unchanged: nothing to do, no complaint
    assert mtimes(root) == before
    with pytest.raises(FileExistsError):  # a parameter change would need to regenerate next to foreign files
        make_synthetic_dataset(root, **{**SMALL, "seed": 8})

    other = tmp_path / "other"
    other.mkdir()
    (other / "dataset.json").write_text('{"name": "somebody else\'s"}')
    with pytest.raises(FileExistsError, match="not written by make_synthetic_dataset"):
        make_synthetic_dataset(other, **SMALL, overwrite=True)
    assert json.loads((other / "dataset.json").read_text()) == {"name": "somebody else's"}


def test_default_dataset_dir(tmp_path):
    path = default_dataset_dir(tmp_path)
    assert path == tmp_path / "data" / "synthetic_em"
    meta = json.loads((path / "dataset.json").read_text())
    assert meta["parameters"]["shape"] == [256, 256]
    assert len(list((path / "images").glob("*.tif"))) == 4
    assert len(list((path / "val" / "labels").glob("*.tif"))) == 1
    before = mtimes(path)
    assert default_dataset_dir(tmp_path) == path and mtimes(path) == before
