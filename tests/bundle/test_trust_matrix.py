"""A user's mistakes never cost them data: each case runs a bundle config as a user would and checks the exit code,
the last line of the output (the cause, naming the file or option and the fix) and the md5 of every file the user
owns (the dataset, ``models/``, ``eval/``) before and after.

The cases are those of issue 17's matrix (bad inputs, wrong options, interrupted or repeated runs) on tiny TIFFs.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_bundle_configs import SCHEDULE, TINY_2D, bundle, check, make_dataset

COMMON = {"num_classes": 3, "class_names": ["x", "y", "z"], **TINY_2D}


def md5_tree(*folders: Path) -> dict[str, str]:
    return {
        str(p): hashlib.md5(p.read_bytes()).hexdigest()
        for folder in folders
        if folder.exists()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory) -> dict:
    """One trained bundle (1 epoch) with predictions and an evaluation, as a user has after a first session."""
    tmp = tmp_path_factory.mktemp("trust")
    data = make_dataset(tmp / "data", (40, 44))
    root = tmp / "b"
    check(bundle("training", "train.json", tmp, dataset_dir=str(data), bundle_root=str(root), **COMMON,
                 **{**SCHEDULE, "epochs": 1}))  # fmt: skip
    check(bundle("inference", "inference.json", tmp, bundle_root=str(root), input_dir=str(data / "val" / "images")))
    check(bundle("evaluate", "evaluate.json", tmp, bundle_root=str(root),
                 label_dir=str(data / "val" / "ground_truth")))  # fmt: skip
    assert (root / "eval" / "predictions" / "v.tif").is_file() and (root / "eval" / "dice.json").is_file()
    return {"tmp": tmp, "data": data, "root": root}


def _label(data: Path, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    path = data / "labels" / "a.tif"
    tifffile.imwrite(path, fn(tifffile.imread(path)))


def _id7(label: np.ndarray) -> np.ndarray:
    label = label.copy()
    label[0, 0] = 7
    return label


def _nan_image(data: Path) -> None:
    image = tifffile.imread(data / "images" / "b.tif").astype(np.float32)
    image[3, 3] = np.nan
    tifffile.imwrite(data / "images" / "b.tif", image)


def _negative(label: np.ndarray) -> np.ndarray:
    label = label.astype(np.int16)
    label[0, 0] = -1
    return label


def _fraction(label: np.ndarray) -> np.ndarray:
    label = label.astype(np.float32)
    label[label == 2] = 1.5
    return label


def _two_channels(data: Path) -> None:
    _two_channels_file(data / "images" / "a.tif")


def _two_channels_file(path: Path) -> None:
    gray = tifffile.imread(path)
    tifffile.imwrite(path, np.stack([gray, gray]), imagej=True, metadata={"axes": "CYX"})


def _no_images(data: Path) -> None:
    for path in (data / "images").glob("*.tif"):
        path.unlink()


def _assert_refused(result, name: str, fragments: list[str]) -> None:
    """A non-zero exit whose last output line holds every fragment (the file or option and the fix)."""
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert result.returncode != 0, f"{name}: exit 0\n{result.stdout[-2000:]}"
    assert all(f in last for f in fragments), f"{name}: last line {last!r}"


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# (id, run id, change to a copy of the dataset, overrides, fragments of the last line)
TRAINING_CASES = [
    ("label id out of range", "training", lambda d: _label(d, _id7), {}, ["a.tif", "7"]),
    ("label shape mismatch", "training", lambda d: _label(d, lambda x: x[:-2]), {}, ["a.tif", "shape"]),
    ("all-zero label", "training", lambda d: _label(d, np.zeros_like), {}, ["a.tif", "no labelled pixel"]),
    ("missing label file", "training", lambda d: (d / "labels" / "a.tif").unlink(), {}, ["a", "annotation"]),
    ("NaN in an image", "training", _nan_image, {}, ["b.tif", "NaN"]),
    ("3D volume in the 2D config", "training",
     lambda d: tifffile.imwrite(d / "images" / "a.tif", np.zeros((5, 40, 44), np.uint8) + 9) or
     tifffile.imwrite(d / "labels" / "a.tif", np.ones((5, 40, 44), np.uint8)), {}, ["a.tif", "spatial_dims"]),
    ("missing dataset folder", "training", lambda d: shutil.rmtree(d), {}, ["does not exist", "--dataset_dir"]),
    ("mistyped run id", "trainig", None, {}, ["Unknown run id 'trainig'"]),
    ("retraining without --overwrite", "training", None, {"overwrite": False}, ["--overwrite true"]),
    ("resume from a missing file", "training", None, {"resume_from": "nowhere.pt"}, ["nowhere.pt", "not found"]),
    ("resume from an empty file", "training", None, {"resume_from": "EMPTY"}, ["empty.pt", "cannot be read"]),
    ("resume from weights only", "training", None, {"resume_from": "MODEL"}, ["not a training checkpoint"]),
    ("num_classes below the label ids", "training", None, {"num_classes": 2, "class_names": ["x", "y"]},
     ["class id 3", "num_classes=2"]),
    ("negative label id", "training", lambda d: _label(d, _negative), {}, ["a.tif", "negative"]),
    ("fractional label ids", "training", lambda d: _label(d, _fraction), {}, ["a.tif", "non-integer"]),
    ("two-channel image, in_channels 1", "training", _two_channels, {}, ["a.tif", "channel"]),
    ("no images in images/", "training", _no_images, {}, ["images", "No .tif"]),
    ("class_names of another length", "training", None, {"class_names": ["x", "y"]}, ["class_names", "3"]),
    ("2D images in a 3D config", "training", None, {"spatial_dims": 3, "patch_size": 8, "head_window": 2},
     ["a.tif", "spatial_dims"]),
    ("resume with another network size", "training", None, {"resume_from": "LAST", "num_filters": 16},
     ["another network size", "network.json"]),
]  # fmt: skip


@pytest.mark.parametrize("case", TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES])
def test_failed_training_changes_nothing(trained_bundle, tmp_path, case):
    name, run_id, change, values, fragments = case
    data = tmp_path / "data"
    shutil.copytree(trained_bundle["data"], data)
    if change is not None:
        change(data)
    root = trained_bundle["root"]
    (tmp_path / "empty.pt").write_bytes(b"")
    resume = {"EMPTY": str(tmp_path / "empty.pt"), "MODEL": str(root / "models" / "model.pt"),
              "LAST": str(next((root / "models").glob("checkpoint_epoch=*.pt")))}  # fmt: skip
    values = {k: resume.get(v, v) if isinstance(v, str) else v for k, v in values.items()}
    before = md5_tree(root, trained_bundle["data"])
    args = {"dataset_dir": str(data), "bundle_root": str(root), **COMMON, **SCHEDULE, "overwrite": True, **values}
    _assert_refused(bundle(run_id, "train.json", tmp_path, **args), name, fragments)
    changed = _changed(before, md5_tree(root, trained_bundle["data"]))
    assert not changed, f"{name}: a user's file changed: {changed}"


def test_failed_inference_and_evaluation_change_nothing(trained_bundle, tmp_path):
    data, root = trained_bundle["data"], trained_bundle["root"]
    images = str(data / "val" / "images")
    (tmp_path / "broken.pt").write_bytes(b"\x00" * 10)  # a truncated download, with its network.json beside it
    (tmp_path / "network.json").write_bytes((root / "models" / "network.json").read_bytes())
    cases = [
        ("inference", "inference.json", {"input_dir": images, "output_dir": str(data / "val" / "labels"),
                                         "overwrite": True}, ["labels"]),
        ("inference", "inference.json", {"input_dir": images}, ["--overwrite true"]),
        ("inference", "inference.json", {"input_dir": images, "output_dir": images, "overwrite": True}, ["input"]),
        ("inference", "inference.json", {"input_dir": str(tmp_path / "none"), "output_dir": str(tmp_path / "o")},
         ["does not exist"]),
        ("inference", "inference.json", {"input_dir": images, "output_dir": str(tmp_path / "o2"),
                                         "checkpoint": str(tmp_path / "broken.pt")}, ["broken.pt", "cannot be read"]),
        ("evaluate", "evaluate.json", {"label_dir": str(data / "val" / "ground_truth")}, ["--overwrite true"]),
        ("evaluate", "evaluate.json", {"label_dir": str(data / "val" / "images"), "overwrite": True,
                                       "pred_dir": str(tmp_path / "nothing")}, ["nothing does not exist", "inference"]),
        ("inferense", "inference.json", {"input_dir": images}, ["Unknown run id"]),
    ]  # fmt: skip
    for run_id, config, values, fragments in cases:
        before = md5_tree(root, data)
        _assert_refused(
            bundle(run_id, config, tmp_path, bundle_root=str(root), **values), f"{run_id} {values}", fragments
        )
        assert md5_tree(root, data) == before, f"{run_id} {values}: a user's file changed"
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


def _copy_folder(source: Path, target: Path) -> Path:
    """A copy of ``source`` at ``target`` to break, so the user's own files stay as they are."""
    shutil.copytree(source, target)
    return target


def _copy_images(tmp: Path, data: Path) -> Path:
    return _copy_folder(data / "val" / "images", tmp / "in")


def _nan_to_predict(tmp: Path, data: Path, root: Path) -> dict:
    folder = _copy_images(tmp, data)
    image = tifffile.imread(folder / "v.tif").astype(np.float32)
    image[5, 5] = np.nan
    tifffile.imwrite(folder / "v.tif", image)
    return {"input_dir": str(folder), "output_dir": str(tmp / "out")}


def _volume_to_predict(tmp: Path, data: Path, root: Path) -> dict:
    folder = _copy_images(tmp, data)
    image = tifffile.imread(folder / "v.tif")
    tifffile.imwrite(folder / "v.tif", np.stack([image] * 6), imagej=True, metadata={"axes": "ZYX"})
    return {"input_dir": str(folder), "output_dir": str(tmp / "out")}


def _two_channels_to_predict(tmp: Path, data: Path, root: Path) -> dict:
    folder = _copy_images(tmp, data)
    _two_channels_file(folder / "v.tif")
    return {"input_dir": str(folder), "output_dir": str(tmp / "out")}


def _corrupt_tiff_to_predict(tmp: Path, data: Path, root: Path) -> dict:
    folder = _copy_images(tmp, data)
    (folder / "v.tif").write_bytes((folder / "v.tif").read_bytes()[:100])  # a truncated copy
    return {"input_dir": str(folder), "output_dir": str(tmp / "out")}


def _empty_input_folder(tmp: Path, data: Path, root: Path) -> dict:
    (tmp / "in").mkdir()
    return {"input_dir": str(tmp / "in"), "output_dir": str(tmp / "out")}


def _weights_without_network_json(tmp: Path, data: Path, root: Path) -> dict:
    (tmp / "w").mkdir()
    shutil.copy(root / "models" / "model.pt", tmp / "w" / "model.pt")
    return {"input_dir": str(data / "val" / "images"), "output_dir": str(tmp / "out"),
            "checkpoint": str(tmp / "w" / "model.pt")}  # fmt: skip


def _weights_of_another_size(tmp: Path, data: Path, root: Path) -> dict:
    import json

    (tmp / "w").mkdir()
    shutil.copy(root / "models" / "model.pt", tmp / "w" / "model.pt")
    config = json.loads((root / "models" / "network.json").read_text())
    config["network"]["num_filters"] = 2 * config["network"]["num_filters"]
    (tmp / "w" / "network.json").write_text(json.dumps(config))
    return {"input_dir": str(data / "val" / "images"), "output_dir": str(tmp / "out"),
            "checkpoint": str(tmp / "w" / "model.pt")}  # fmt: skip


def _calibration_missing(tmp: Path, data: Path, root: Path) -> dict:
    return {"input_dir": str(data / "val" / "images"), "output_dir": str(tmp / "out"), "calibrate_priors": True}


def _prediction_of_another_shape(tmp: Path, data: Path, root: Path) -> dict:
    folder = _copy_folder(root / "eval" / "predictions", tmp / "pred")
    tifffile.imwrite(folder / "v.tif", tifffile.imread(folder / "v.tif")[:-3])
    return {"pred_dir": str(folder), "label_dir": str(data / "val" / "ground_truth"), "overwrite": True}


def _missing_prediction(tmp: Path, data: Path, root: Path) -> dict:
    folder = _copy_folder(data / "val" / "ground_truth", tmp / "gt")
    shutil.copy(folder / "v.tif", folder / "w.tif")  # a second image, never predicted
    return {"pred_dir": str(root / "eval" / "predictions"), "label_dir": str(folder), "overwrite": True}


def _ground_truth_id_out_of_range(tmp: Path, data: Path, root: Path) -> dict:
    folder = _copy_folder(data / "val" / "ground_truth", tmp / "gt")
    label = tifffile.imread(folder / "v.tif").copy()
    label[0, 0] = 9
    tifffile.imwrite(folder / "v.tif", label)
    return {"pred_dir": str(root / "eval" / "predictions"), "label_dir": str(folder), "overwrite": True}


# (id, run id, config, set-up returning the overrides, fragments of the last line)
PREDICTION_CASES = [
    ("NaN in an image to predict", "inference", "inference.json", _nan_to_predict, ["v.tif", "NaN"]),
    ("3D volume to a 2D model", "inference", "inference.json", _volume_to_predict, ["v.tif", "2D"]),
    ("two-channel image to a one-channel model", "inference", "inference.json", _two_channels_to_predict,
     ["v.tif", "channel"]),
    ("truncated TIFF to predict", "inference", "inference.json", _corrupt_tiff_to_predict, ["v.tif"]),
    ("empty input folder", "inference", "inference.json", _empty_input_folder, ["in", "No .tif"]),
    ("weights without their network.json", "inference", "inference.json", _weights_without_network_json,
     ["network.json"]),
    ("network.json of another network size", "inference", "inference.json", _weights_of_another_size,
     ["model.pt", "network.json"]),
    ("--calibrate_priors true without a calibration", "inference", "inference.json", _calibration_missing,
     ["class_priors.json", "calibrate"]),
    ("prediction of another shape than its ground truth", "evaluate", "evaluate.json", _prediction_of_another_shape,
     ["v.tif", "shape"]),
    ("ground-truth id above num_classes", "evaluate", "evaluate.json", _ground_truth_id_out_of_range,
     ["v.tif", "class id 9", "use ids 1..3"]),
]  # fmt: skip


@pytest.mark.parametrize("case", PREDICTION_CASES, ids=[c[0] for c in PREDICTION_CASES])
def test_failed_prediction_writes_nothing(trained_bundle, tmp_path, case):
    """Bad inputs to inference and evaluation: a clear last line, the user's files unchanged, no output written."""
    name, run_id, config, set_up, fragments = case
    data, root = trained_bundle["data"], trained_bundle["root"]
    values = set_up(tmp_path, data, root)
    inputs = [Path(v) for k, v in values.items() if k in ("input_dir", "pred_dir", "label_dir", "checkpoint")]
    before = md5_tree(root, data, *(p for p in inputs if p.is_dir()))
    _assert_refused(bundle(run_id, config, tmp_path, bundle_root=str(root), **values), name, fragments)
    changed = _changed(before, md5_tree(root, data, *(p for p in inputs if p.is_dir())))
    assert not changed, f"{name}: a user's file changed: {changed}"
    out = tmp_path / "out"
    assert not out.exists() or not any(out.rglob("*.*")), f"{name}: wrote {sorted(out.rglob('*'))}"


def test_evaluation_names_ground_truth_without_prediction(trained_bundle, tmp_path):
    """A label map without a prediction is not an error (a user may predict a subset), but it is named: a warning
    in the output and ``labels_without_prediction`` in ``dice.json``."""
    import json

    data, root = trained_bundle["data"], trained_bundle["root"]
    values = _missing_prediction(tmp_path, data, root)
    before = md5_tree(data, tmp_path / "gt", root / "eval" / "predictions", root / "models")
    result = bundle("evaluate", "evaluate.json", tmp_path, bundle_root=str(root), **values,
                    output_dir=str(tmp_path / "eval"))  # fmt: skip
    check(result)
    assert "have no prediction" in result.stdout + result.stderr and "['w']" in result.stdout + result.stderr
    report = json.loads((tmp_path / "eval" / "dice.json").read_text())
    assert report["labels_without_prediction"] == ["w"] and list(report["per_image"]) == ["v"]
    assert md5_tree(data, tmp_path / "gt", root / "eval" / "predictions", root / "models") == before
