"""Tests of ``epsseg_monai.data.vnc``: VNC grey codes to class ids and the benchmark's folder layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from epsseg_monai.data import dataset_splits, sparse_datalist
from epsseg_monai.data.vnc import VNC_CLASS_NAMES, VNC_CODES, main, prepare_vnc, vnc_dense_to_classes

#: The benchmark's classes as documented in ../shared/data/README.md (written out independently of VNC_CODES).
README_CODES = {255: 1, 0: 2, 32: 2, 64: 2, 96: 2, 128: 2, 223: 2, 191: 3, 159: 4}


def test_codes_cover_the_documented_classes() -> None:
    assert {code: cls for cls, codes in VNC_CODES.items() for code in codes} == README_CODES
    assert len(VNC_CLASS_NAMES) == len(VNC_CODES) == 4


def test_dense_to_classes_maps_each_code() -> None:
    codes = np.array(sorted(README_CODES), dtype=np.uint8).reshape(3, 3)
    out = vnc_dense_to_classes(codes)
    assert out.shape == codes.shape and out.dtype == np.uint8
    for code, cls in README_CODES.items():
        assert out[codes == code].tolist() == [cls]


def test_dense_to_classes_keeps_positions() -> None:
    codes = np.array([[255, 191, 159], [0, 255, 223]], dtype=np.uint8)
    np.testing.assert_array_equal(vnc_dense_to_classes(codes), [[1, 3, 4], [2, 1, 2]])


@pytest.mark.parametrize("unknown", [1, 200, 254])
def test_dense_to_classes_refuses_unknown_codes(unknown: int) -> None:
    codes = np.array([[255, unknown], [0, 159]], dtype=np.uint8)
    with pytest.raises(ValueError, match=f"unknown VNC label codes \\[{unknown}\\]"):
        vnc_dense_to_classes(codes)


def test_prepare_vnc_refuses_wrong_source(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(FileNotFoundError, match="sparse_0.05pct not found"):
        prepare_vnc(tmp_path, tmp_path / "out")


def _check_links(folder: Path, target: Path, sections: range | tuple[int, ...]) -> None:
    names = [f"{s:02d}.tif" for s in sections]
    assert sorted(p.name for p in folder.iterdir()) == names
    for name in names:
        link = folder / name
        assert link.is_symlink()
        assert link.resolve() == (target / name).resolve()


def test_prepare_vnc_layout(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "vnc"
    dst = tmp_path / "vnc"
    assert prepare_vnc(src, dst) == dst
    assert sorted(p.name for p in dst.iterdir()) == ["images", "labels", "val"]
    assert sorted(p.name for p in (dst / "val").iterdir()) == ["ground_truth", "images", "labels"]
    _check_links(dst / "images", src / "raw", range(12))
    _check_links(dst / "labels", src / "sparse_0.05pct", range(12))
    _check_links(dst / "val" / "images", src / "raw", (12, 13, 14))
    _check_links(dst / "val" / "labels", src / "sparse_0.05pct", (12, 13, 14))

    truth = dst / "val" / "ground_truth"
    assert sorted(p.name for p in truth.iterdir()) == ["12.tif", "13.tif", "14.tif"]
    for s in (12, 13, 14):
        gt = tifffile.imread(truth / f"{s}.tif")
        assert not (truth / f"{s}.tif").is_symlink()
        codes = np.asarray(Image.open(src / "labels" / f"{s}.png"))
        assert gt.shape == codes.shape == tifffile.imread(src / "raw" / f"{s}.tif").shape
        assert set(np.unique(gt).tolist()) == {1, 2, 3, 4}
        for code, cls in README_CODES.items():
            assert (gt[codes == code] == cls).all()
        # the sparse points were drawn from the dense labels: they agree
        sparse = tifffile.imread(dst / "val" / "labels" / f"{s}.tif")
        assert (sparse[sparse > 0] == gt[sparse > 0]).all()

    splits = dataset_splits(dst)
    assert [d["name"] for d in splits["train"]] == [f"{s:02d}" for s in range(12)]
    assert [d["name"] for d in splits["val"]] == ["12", "13", "14"]
    assert splits["holdout_fraction"] == 0.0


def test_prepare_vnc_rerun_and_density(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "vnc"
    dst = tmp_path / "vnc"
    prepare_vnc(src, dst, train=(0, 1), val=(14,))
    prepare_vnc(src, dst, density="sparse_0.005pct", train=(0, 1), val=(14,))  # links are replaced
    _check_links(dst / "labels", src / "sparse_0.005pct", (0, 1))
    _check_links(dst / "val" / "labels", src / "sparse_0.005pct", (14,))
    assert [d["name"] for d in sparse_datalist(dst)] == ["00", "01"]


def test_main_cli(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "cli"
    main(["--src", str(data_dir / "vnc"), "--dst", str(dst), "--density", "sparse_0.005pct"])
    assert capsys.readouterr().out.strip() == str(dst)
    assert len(sparse_datalist(dst)) == 12
    assert len(sparse_datalist(dst / "val")) == 3
    assert (dst / "labels" / "00.tif").resolve() == (data_dir / "vnc" / "sparse_0.005pct" / "00.tif").resolve()
