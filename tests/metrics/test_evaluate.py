"""Tests of ``epsseg_monai.metrics.evaluate_segmentations``: folder scoring against dense labels."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from epsseg_monai.metrics import evaluate_segmentations

# image "a": per class (TP, FP, FN) = (3, 2, 0), (1, 0, 2); one pixel not predicted, one unlabelled
PRED_A = np.array([[1, 1, 1, 1], [2, 0, 2, 1]], dtype=np.uint8)
LABEL_A = np.array([[1, 1, 1, 2], [2, 2, 0, 2]], dtype=np.uint8)
# image "b": class 1 (TP, FP, FN) = (0, 0, 2), class 2 = (1, 2, 0)
PRED_B = np.array([[2, 2, 2]], dtype=np.uint8)
LABEL_B = np.array([[1, 1, 2]], dtype=np.uint8)


def write(folder: Path, name: str, arr: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / name, arr)
    return folder / name


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, label = tmp_path / "pred", tmp_path / "labels"
    write(pred, "a.tif", PRED_A)
    write(pred, "b.tif", PRED_B)
    write(label, "a.tif", LABEL_A)
    write(label, "b.tif", LABEL_B)
    return pred, label


def test_report_numbers(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, label = folders
    out = tmp_path / "eval"
    report = evaluate_segmentations(pred, label, 2, out, class_names=["cell", "membrane"])
    dice_a = [2 * 3 / (6 + 2 + 0), 2 * 1 / (2 + 0 + 2)]
    dice_b = [0.0, 2 * 1 / (2 + 2 + 0)]
    # overall: summed counts (3, 2, 2) and (2, 2, 2), not the mean of the per-image Dice
    overall = [2 * 3 / (6 + 2 + 2), 2 * 2 / (4 + 2 + 2)]
    assert overall[0] != pytest.approx((dice_a[0] + dice_b[0]) / 2)
    assert set(report["per_image"]) == {"a", "b"}
    assert [report["per_image"]["a"][n] for n in ("cell", "membrane")] == pytest.approx(dice_a)
    assert report["per_image"]["a"]["mean"] == pytest.approx(np.mean(dice_a))
    assert report["per_image"]["a"]["pixels"] == 6
    assert [report["per_image"]["b"][n] for n in ("cell", "membrane")] == pytest.approx(dice_b)
    assert report["per_image"]["b"]["pixels"] == 3
    assert [report["overall"][n] for n in ("cell", "membrane")] == pytest.approx(overall)
    assert report["overall"]["mean"] == pytest.approx(np.mean(overall))
    assert report["overall"]["pixels"] == 9
    assert report["pred_dir"] == str(pred) and report["label_dir"] == str(label)

    assert json.loads((out / "dice.json").read_text()) == report
    with open(out / "dice.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "cell", "membrane", "mean", "pixels"]
    assert [r[0] for r in rows[1:]] == ["a", "b", "all"]
    for row, (dice, pixels) in zip(rows[1:], [(dice_a, 6), (dice_b, 3), (overall, 9)]):
        assert [float(v) for v in row[1:4]] == pytest.approx([*dice, np.mean(dice)], abs=5e-5)
        assert row[1] == f"{dice[0]:.4f}"
        assert int(row[4]) == pixels


def test_default_class_names(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, label = folders
    report = evaluate_segmentations(pred, label, 3, tmp_path / "eval")
    assert [k for k in report["overall"] if k.startswith("class")] == ["class1", "class2", "class3"]
    assert math.isnan(report["overall"]["class3"])  # class 3 appears nowhere
    # the mean is over the classes present
    assert report["overall"]["mean"] == pytest.approx((report["overall"]["class1"] + report["overall"]["class2"]) / 2)
    with open(tmp_path / "eval" / "dice.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["image", "class1", "class2", "class3", "mean", "pixels"]


def test_class_names_length_is_checked(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, label = folders
    with pytest.raises(ValueError, match="1 class names for 2 classes"):
        evaluate_segmentations(pred, label, 2, tmp_path / "eval", class_names=["only"])


def test_prob_files_and_extra_labels_are_ignored(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, label = folders
    tifffile.imwrite(pred / "a_prob.tif", np.full((2, 2, 4), 0.5, np.float32), imagej=True, metadata={"axes": "CYX"})
    write(label, "c.tif", LABEL_B)  # a label without prediction is not scored
    report = evaluate_segmentations(pred, label, 2, tmp_path / "eval")
    assert set(report["per_image"]) == {"a", "b"}
    assert report["overall"]["pixels"] == 9


def test_empty_prediction_folder(tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    write(tmp_path / "labels", "a.tif", LABEL_A)
    with pytest.raises(FileNotFoundError, match="No predicted label maps"):
        evaluate_segmentations(tmp_path / "pred", tmp_path / "labels", 2, tmp_path / "eval")
    # probabilities alone are not predictions
    tifffile.imwrite(tmp_path / "pred" / "a_prob.tif", np.zeros((2, 4), np.float32))
    with pytest.raises(FileNotFoundError, match="No predicted label maps"):
        evaluate_segmentations(tmp_path / "pred", tmp_path / "labels", 2, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_prediction_without_label(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, label = folders
    write(pred, "extra.tif", PRED_B)
    with pytest.raises(FileNotFoundError, match="prediction\\(s\\) \\['extra'\\]"):
        evaluate_segmentations(pred, label, 2, tmp_path / "eval")


def test_shape_mismatch(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, label = folders
    write(label, "b.tif", LABEL_A)
    with pytest.raises(ValueError, match="b.tif has shape"):
        evaluate_segmentations(pred, label, 2, tmp_path / "eval")


def test_class_ids_above_num_classes(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, label = folders
    with pytest.raises(ValueError, match=r"\.tif holds class id\(s\) \[2(, 3)?\] outside 0\.\.1 .*; was it predicted"):
        evaluate_segmentations(pred, label, 1, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_json_is_strict_when_a_class_is_absent(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, label = folders
    evaluate_segmentations(pred, label, 3, tmp_path / "eval")  # class 3 appears nowhere: NaN

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token}")

    json.loads((tmp_path / "eval" / "dice.json").read_text(), parse_constant=refuse)


def test_an_earlier_evaluation_is_kept_unless_overwrite(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, label = folders
    out = tmp_path / "eval"
    evaluate_segmentations(pred, label, 2, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "dice.json").write_text('{"mine": 1}')
    with pytest.raises(FileExistsError, match="--overwrite true"):
        evaluate_segmentations(pred, label, 2, out)
    assert (out / "dice.json").read_text() == '{"mine": 1}' and (out / "dice.csv").read_bytes() == before["dice.csv"]
    evaluate_segmentations(pred, label, 2, out, overwrite=True)
    assert (out / "dice.json").read_bytes() == before["dice.json"]
