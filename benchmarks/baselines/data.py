"""Load the accuracy benchmark's datasets (``../shared/data``) as numpy arrays, and score predictions.

Datasets (layout described in the data folder's ``README.md``):

* ``vnc``: ssTEM sections ``raw/NN.tif`` (1024x1024 uint8), dense labels ``labels/NN.png`` in the dataset's
  grey codes (mapped to classes 1..4 with :func:`epsseg_monai.data.vnc.vnc_dense_to_classes`), sparse points
  ``sparse_0.05pct/NN.tif`` and ``sparse_0.005pct/NN.tif``. Split: sections 00-11 train, 12-14 test (the
  development split the data README suggests and :func:`epsseg_monai.data.vnc.prepare_vnc` uses).
* ``nih3t3``: fluorescence nuclei ``raw/N.png`` (1024x1344 uint8, 18 images), dense labels ``labels/N.png``
  (0 background, 255 nucleus; mapped to 1 background, 2 nucleus), sparse points ``sparse_0.05pct/N.tif``.
  Split: the image ids sorted numerically, the last 4 are the test images (``45, 46, 47, 49``), the other 14
  train. The dataset comes with no official split; a fixed rule on the ids needs no random seed, is the same
  for every tool that reads the folder, and holds out about the same share of the data as the VNC split
  (4/18 = 22 % against 3/15 = 20 %).

Images are returned as float32 raw intensities (no normalisation: each method normalises as it needs), label
maps as int64 with ``0`` = unlabelled (sparse maps only) and ``1..C`` = class ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from epsseg_monai.data.vnc import VNC_CLASS_NAMES, vnc_dense_to_classes
from epsseg_monai.metrics.sparse_dice import dice_counts, dice_from_counts

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_ROOT",
    "NIH3T3_CLASS_NAMES",
    "NIH3T3_NUM_TEST",
    "VNC_TEST_SECTIONS",
    "VNC_TRAIN_SECTIONS",
    "BenchmarkDataset",
    "default_data_root",
    "dice_scores",
    "load_dataset",
]

#: Repository root (``benchmarks/baselines/data.py`` -> two folders up).
_REPO_ROOT = Path(__file__).resolve().parents[2]
#: Benchmark data next to the repository: ``../shared/data`` from the repository root.
DEFAULT_DATA_ROOT = _REPO_ROOT.parent / "shared" / "data"
DATASETS: tuple[str, ...] = ("vnc", "nih3t3")
VNC_TRAIN_SECTIONS: tuple[int, ...] = tuple(range(12))
VNC_TEST_SECTIONS: tuple[int, ...] = (12, 13, 14)
NIH3T3_CLASS_NAMES: tuple[str, ...] = ("background", "nucleus")
#: Number of NIH3T3 images (the highest ids) held out for testing.
NIH3T3_NUM_TEST = 4


@dataclass
class BenchmarkDataset:
    """One benchmark dataset split into training and test images.

    Attributes:
        name: dataset name (``"vnc"`` or ``"nih3t3"``).
        class_names: names of the classes ``1..C``, in order.
        train_images: ``(N, H, W)`` float32 raw intensities of the training images.
        train_sparse: ``(N, H, W)`` int64 sparse annotations (``0`` unlabelled, ``1..C``).
        train_dense: ``(N, H, W)`` int64 dense labels ``1..C`` of the training images (for upper bounds only:
            the benchmark protocol trains on the sparse annotations).
        test_images: ``(M, H, W)`` float32 raw intensities of the test images.
        test_dense: ``(M, H, W)`` int64 dense labels ``1..C`` of the test images.
        train_ids: file stems of the training images (``"00"``.. or ``"0"``..).
        test_ids: file stems of the test images.
    """

    name: str
    class_names: tuple[str, ...]
    train_images: np.ndarray
    train_sparse: np.ndarray
    train_dense: np.ndarray
    test_images: np.ndarray
    test_dense: np.ndarray
    train_ids: list[str]
    test_ids: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)


def default_data_root() -> Path:
    """The data root: ``$EPSSEG_DATA_DIR`` if set (as in the tests), else ``../shared/data`` from the repo root."""
    env = os.environ.get("EPSSEG_DATA_DIR")
    return Path(env) if env else DEFAULT_DATA_ROOT


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found: {path}. Pass --data_root pointing to the benchmark data folder "
            "(the one holding vnc/ and nih3t3/)."
        )
    return path


def _density_folder(density: str) -> str:
    return density if density.startswith("sparse_") else f"sparse_{density}"


def _read_gray(path: Path) -> np.ndarray:
    _require(path, "image")
    if path.suffix.lower() in (".tif", ".tiff"):
        arr = tifffile.imread(path)
    else:
        with Image.open(path) as im:
            arr = np.asarray(im)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel 2D image, got shape {arr.shape}.")
    return arr


def _stack(arrays: Sequence[np.ndarray], dtype: type) -> np.ndarray:
    return np.stack([np.asarray(a, dtype=dtype) for a in arrays])


def _vnc_ids(sections: Sequence[int]) -> list[str]:
    return [f"{s:02d}" for s in sections]


def _nih3t3_ids(raw_dir: Path) -> list[str]:
    ids = sorted((p.stem for p in raw_dir.glob("*.png")), key=int)
    if len(ids) <= NIH3T3_NUM_TEST:
        raise FileNotFoundError(
            f"only {len(ids)} images in {raw_dir}; expected the 18 NIH3T3 images. Pass --data_root pointing to "
            "the benchmark data folder (the one holding vnc/ and nih3t3/)."
        )
    return ids


def _nih3t3_dense(codes: np.ndarray, path: Path) -> np.ndarray:
    values = set(np.unique(codes).tolist())
    if not values <= {0, 255}:
        raise ValueError(f"{path}: NIH3T3 labels must be 0 (background) or 255 (nucleus), found {sorted(values)}.")
    return np.where(codes == 255, 2, 1)


def load_dataset(name: str, root: str | os.PathLike | None = None, density: str = "sparse_0.05pct") -> BenchmarkDataset:
    """Load one benchmark dataset with its train/test split.

    Args:
        name: ``"vnc"`` or ``"nih3t3"``.
        root: data root holding ``vnc/`` and ``nih3t3/``; ``None`` for :func:`default_data_root`.
        density: sparse annotation set, the folder name (``"sparse_0.05pct"``) or its suffix (``"0.05pct"``).
            VNC has ``0.05pct`` and ``0.005pct``, NIH3T3 only ``0.05pct``.

    Returns:
        The dataset, see :class:`BenchmarkDataset`.

    Raises:
        ValueError: unknown dataset name, or label values outside the documented codes.
        FileNotFoundError: a folder or file of the dataset is missing (the message names it).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}.")
    root = Path(root) if root is not None else default_data_root()
    base = _require(root / name, f"{name} benchmark folder")
    sparse_dir = base / _density_folder(density)
    if not sparse_dir.is_dir():
        available = sorted(p.name for p in base.glob("sparse_*") if p.is_dir())
        _require(sparse_dir, f"sparse annotation folder (available: {available})")
    raw_dir = _require(base / "raw", "raw image folder")
    label_dir = _require(base / "labels", "dense label folder")

    if name == "vnc":
        class_names = VNC_CLASS_NAMES
        train_ids, test_ids = _vnc_ids(VNC_TRAIN_SECTIONS), _vnc_ids(VNC_TEST_SECTIONS)
        raw_ext = ".tif"

        def dense(stem: str) -> np.ndarray:
            return vnc_dense_to_classes(_read_gray(label_dir / f"{stem}.png"))

    else:
        class_names = NIH3T3_CLASS_NAMES
        ids = _nih3t3_ids(raw_dir)
        train_ids, test_ids = ids[:-NIH3T3_NUM_TEST], ids[-NIH3T3_NUM_TEST:]
        raw_ext = ".png"

        def dense(stem: str) -> np.ndarray:
            path = label_dir / f"{stem}.png"
            return _nih3t3_dense(_read_gray(path), path)

    def sparse(stem: str) -> np.ndarray:
        path = sparse_dir / f"{stem}.tif"
        arr = _read_gray(path)
        if arr.max() > len(class_names):
            raise ValueError(f"{path}: sparse class ids above {len(class_names)} found.")
        return arr

    return BenchmarkDataset(
        name=name,
        class_names=tuple(class_names),
        train_images=_stack([_read_gray(raw_dir / f"{s}{raw_ext}") for s in train_ids], np.float32),
        train_sparse=_stack([sparse(s) for s in train_ids], np.int64),
        train_dense=_stack([dense(s) for s in train_ids], np.int64),
        test_images=_stack([_read_gray(raw_dir / f"{s}{raw_ext}") for s in test_ids], np.float32),
        test_dense=_stack([dense(s) for s in test_ids], np.int64),
        train_ids=list(train_ids),
        test_ids=list(test_ids),
    )


def dice_scores(
    pred: np.ndarray | Sequence[np.ndarray], truth: np.ndarray | Sequence[np.ndarray], num_classes: int
) -> tuple[list[float], float]:
    """Per-class Dice of predicted against true label maps, with counts summed over all images.

    True positives, false positives and false negatives are summed over every labelled pixel of every image
    before the Dice is computed (as :class:`epsseg_monai.metrics.SparseDiceMetric` does), so each pixel has the
    same weight whatever image it lies in.

    Args:
        pred: predicted class ids ``1..C``, one ``(H, W)`` map per image (a stacked array or a sequence).
        truth: true class ids, same shapes; ``0`` marks pixels left out of the score.
        num_classes: ``C``.

    Returns:
        ``(per_class, mean)``: Dice of classes ``1..C`` (NaN for a class absent from both maps) and their mean
        over the classes that are not NaN.

    Raises:
        ValueError: mismatched shapes or image counts, class ids above ``C``, or a labelled pixel left
            unpredicted (``0``), which the underlying counts would silently skip.
    """
    if len(pred) != len(truth):
        raise ValueError(f"{len(pred)} predictions for {len(truth)} label maps.")
    counts = torch.zeros((num_classes, 3), dtype=torch.long)
    for p, t in zip(pred, truth):
        p, t = np.asarray(p), np.asarray(t)
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {p.shape} differs from label shape {t.shape}.")
        if ((p <= 0) & (t > 0)).any():
            raise ValueError("the prediction leaves labelled pixels without a class id (0 or negative).")
        counts += dice_counts(torch.from_numpy(p.astype(np.int64)), torch.from_numpy(t.astype(np.int64)), num_classes)
    per_class = dice_from_counts(counts).tolist()
    present = [d for d in per_class if not np.isnan(d)]
    return per_class, float(np.mean(present)) if present else float("nan")
