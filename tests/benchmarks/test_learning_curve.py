from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.learning_curve import main, merge_curve_rows


def _results(path: Path, rows: dict[str, float]) -> Path:
    methods = {key: {"dice": [value], "mean_dice": value} for key, value in rows.items()}
    path.write_text(json.dumps({"vnc:sparse_0.05pct": {"class_names": ["a"], "methods": methods}}))
    return path


def test_merge_keeps_each_run_apart_and_labels_it(tmp_path: Path) -> None:
    new = _results(tmp_path / "new.json", {"epsseg@300s": 0.7, "epsseg_calibrated@300s": 0.72, "epsseg": 0.8})
    old = _results(tmp_path / "old.json", {"epsseg@300s": 0.6, "unet_sparse@300s": 0.65, "unet_sparse@900s": 0.75})
    rows, labels = merge_curve_rows([(new, "new"), (old, "")], "vnc:sparse_0.05pct")
    assert rows["epsseg[0]@300s"]["mean_dice"] == 0.7 and rows["epsseg[1]@300s"]["mean_dice"] == 0.6
    assert "epsseg[0]" not in rows  # rows without a budget are not curve points
    assert labels["epsseg_calibrated[0]"] == "new: ε-Seg (preset), calibrated"
    assert labels["unet_sparse[1]"] == "U-Net, sparse clicks"
    rows, _ = merge_curve_rows([(new, "new"), (old, "")], "vnc:sparse_0.05pct", ["epsseg_calibrated", "unet_sparse"])
    assert set(rows) == {"epsseg_calibrated[0]@300s", "unet_sparse[1]@300s", "unet_sparse[1]@900s"}


def test_runs_with_one_label_are_averaged_with_their_range(tmp_path: Path) -> None:
    seed0 = _results(tmp_path / "s0.json", {"epsseg@300s": 0.70, "epsseg@900s": 0.76})
    seed1 = _results(tmp_path / "s1.json", {"epsseg@300s": 0.74})
    long0 = _results(tmp_path / "long0.json", {"epsseg@1800s": 0.80})
    other = _results(tmp_path / "other.json", {"epsseg@300s": 0.60})
    rows, labels = merge_curve_rows(
        [(seed0, "new"), (seed1, "new"), (long0, "new"), (other, "old")], "vnc:sparse_0.05pct"
    )
    assert rows["epsseg[0]@300s"] == pytest.approx({"mean_dice": 0.72, "dice_min": 0.70, "dice_max": 0.74, "runs": 2})
    assert rows["epsseg[0]@900s"]["runs"] == 1 and rows["epsseg[0]@1800s"]["mean_dice"] == 0.80
    assert rows["epsseg[1]@300s"]["mean_dice"] == 0.60  # another label stays its own curve
    assert labels["epsseg[0]"] == "new (mean of 2 runs)"  # one method under a label: the label names it
    assert labels["epsseg[1]"] == "old"


def test_errors_name_the_file(tmp_path: Path) -> None:
    old = _results(tmp_path / "old.json", {"unet_sparse@300s": 0.65})
    with pytest.raises(FileNotFoundError, match="missing.json"):
        merge_curve_rows([(tmp_path / "missing.json", "")], "vnc:sparse_0.05pct")
    with pytest.raises(ValueError, match="old.json has no rows for nih3t3"):
        merge_curve_rows([(old, "")], "nih3t3:sparse_0.05pct")
    with pytest.raises(ValueError, match="old.json has no learning-curve rows"):
        merge_curve_rows([(old, "")], "vnc:sparse_0.05pct", ["epsseg"])


def test_main_writes_the_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib (the [benchmarks] extra)")
    from PIL import Image

    new = _results(tmp_path / "new.json", {"epsseg@300s": 0.7, "epsseg@900s": 0.75})
    old = _results(tmp_path / "old.json", {"unet_sparse@300s": 0.65, "unet_sparse@900s": 0.75})
    out = tmp_path / "fig" / "curve.png"
    main(["--dataset", "vnc:sparse_0.05pct", "--results", f"{new}=new", f"{old}=", "--output", str(out)])
    assert Image.open(out).size[0] > 300
    again = _results(tmp_path / "again.json", {"epsseg@300s": 0.6, "epsseg@900s": 0.8})  # drawn with error bars
    main(["--dataset", "vnc:sparse_0.05pct", "--results", f"{new}=new", f"{again}=new", "--output", str(out)])
    assert Image.open(out).size[0] > 300
