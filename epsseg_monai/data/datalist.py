"""Data lists for the bundle's folder convention, and intensity statistics of the training images.

Folder convention (napari Labels convention for the annotations)::

    dataset_dir/images/<name>.<tif|tiff|png|nii|nii.gz>   2D images or 3D volumes, one or more channels
    dataset_dir/labels/<name>.<same>                       sparse annotations: 0 unlabelled, 1..C class ids
    dataset_dir/val/images/..., dataset_dir/val/labels/... optional validation set, same layout

Without ``val/``, validation uses a seeded, class-stratified share of the labelled points
(:class:`epsseg_monai.transforms.SplitSparseLabelsd`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .image_io import image_stem, list_images

__all__ = [
    "check_validation",
    "dataset_splits",
    "label_coverage",
    "image_datalist",
    "intensity_statistics",
    "load_intensity_stats",
    "save_intensity_stats",
    "sparse_datalist",
]


def image_datalist(folder: str | os.PathLike) -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for every readable image of ``folder`` (for inference).

    Raises:
        FileNotFoundError: when the folder does not exist or holds no readable image.
    """
    files = list_images(folder)
    if not files:
        raise FileNotFoundError(f"No .tif/.tiff/.png/.nii/.nii.gz images in {folder}; point --input_dir at them.")
    return [{"image": str(f)} for f in files]


def sparse_datalist(
    dataset_dir: str | os.PathLike, image_dir: str = "images", label_dir: str = "labels"
) -> list[dict[str, str]]:
    """Pair ``dataset_dir/images/<name>.*`` with ``dataset_dir/labels/<name>.*``.

    Returns:
        ``[{"image": path, "label": path, "name": name}, ...]`` sorted by name.

    Raises:
        FileNotFoundError: when a folder is missing, empty, or an image has no annotation (or vice versa).
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Dataset folder {root} does not exist; pass --dataset_dir pointing at a folder with images/ and labels/."
        )
    for sub in (image_dir, label_dir):
        if not (root / sub).is_dir():
            raise FileNotFoundError(
                f"{root / sub} is missing: a dataset folder needs {image_dir}/ (images) and {label_dir}/ "
                "(sparse annotations of the same names, 0 = unlabelled, 1..C = class ids)."
            )
    images = {image_stem(f): f for f in list_images(root / image_dir)}
    labels = {image_stem(f): f for f in list_images(root / label_dir)}
    if not images:
        raise FileNotFoundError(f"No .tif/.tiff/.png/.nii/.nii.gz images in {root / image_dir}.")
    if missing := sorted(set(images) - set(labels)):
        raise FileNotFoundError(
            f"No annotation in {root / label_dir} for image(s) {missing[:5]}; add a label map of the same name "
            "with some labelled pixels (ids 1..C, 0 = unlabelled), or move images you have not annotated out of "
            f"{root / image_dir}."
        )
    if orphans := sorted(set(labels) - set(images)):
        raise FileNotFoundError(
            f"Annotation(s) {orphans[:5]} in {root / label_dir} have no image in {root / image_dir}."
        )
    return [{"image": str(images[n]), "label": str(labels[n]), "name": n} for n in sorted(images)]


def dataset_splits(dataset_dir: str | os.PathLike, val_fraction: float = 0.2) -> dict[str, Any]:
    """Training and validation data lists of a dataset folder.

    Args:
        dataset_dir: folder in the convention of this module.
        val_fraction: share of each image's labelled points held out for validation when there is no ``val/``;
            ``0`` trains on every click without validation (once the settings are chosen, see
            :func:`check_validation`).

    Returns:
        ``{"train": [...], "val": [...], "holdout_fraction": f}``; ``f`` is ``0`` when ``val/`` exists,
        otherwise ``val_fraction`` and both lists hold the same files (to be split by
        :class:`~epsseg_monai.transforms.SplitSparseLabelsd`); with ``val_fraction=0`` and no ``val/`` the
        validation list is empty.
    """
    train = sparse_datalist(dataset_dir)
    val_dir = Path(dataset_dir) / "val"
    if val_dir.is_dir():
        return {"train": train, "val": sparse_datalist(val_dir), "holdout_fraction": 0.0}
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(
            f"val_fraction must be in [0, 1) when {dataset_dir} has no val/ folder, got {val_fraction} "
            "(0 trains on every click without validation)."
        )
    if val_fraction == 0.0:
        return {"train": train, "val": [], "holdout_fraction": 0.0}
    return {"train": train, "val": [dict(d) for d in train], "holdout_fraction": float(val_fraction)}


def check_validation(
    splits: dict[str, Any], phases: Sequence[str] = ("train",), calibrate_after_training: bool | str = False
) -> bool:
    """Whether a training run validates, and a clear error or warning where its settings need validation.

    ``--val_fraction 0`` (without a ``val/`` folder) trains on every click: what a user does once the settings
    are chosen on held-out clicks. Without validation ``model.pt`` holds the last epoch's weights (averaged where
    ``weight_averaging`` is on), there is no early stopping and no plateau schedule of the learning rate (the
    time-budget decay, ``lr_time_decay``, still applies), and the class-share calibration, which needs held-out
    clicks, is skipped with a warning. The second phases (``semi_supervised.json``, ``self_train.json``) choose
    their model by validation and are refused.

    Args:
        splits: the output of :func:`dataset_splits`.
        phases: the run's training phases (the bundle's ``phases``).
        calibrate_after_training: the bundle's ``--calibrate_after_training``.

    Returns:
        ``True`` when the run has validation data.
    """
    from ..utils import as_flag

    if len(splits["val"]) > 0:
        return True
    extra = [p for p in phases if p != "train"]
    if extra:
        raise ValueError(
            f"The {', '.join(extra)} phase chooses its model by validation, but --val_fraction 0 holds out no click. "
            "Keep --val_fraction > 0 (or add a val/ folder) with that overlay, or train without it."
        )
    if as_flag(calibrate_after_training, "calibrate_after_training"):
        warnings.warn(
            "--val_fraction 0 holds out no click, so the class-share calibration after training is skipped "
            "(pass --calibrate_after_training false to silence this, or keep --val_fraction > 0 to calibrate).",
            stacklevel=2,
        )
    return False


def intensity_statistics(datalist: Sequence[dict[str, Any]], key: str = "image") -> dict[str, list[float]]:
    """Per-channel mean and standard deviation over all pixels of the images of ``datalist``.

    Raises:
        ValueError: when an image holds NaN/inf, is constant, or the images disagree in channel count.
    """
    from ..transforms.load_image import LoadMicroscopyImage

    load = LoadMicroscopyImage()
    total = total_sq = count = None
    for item in datalist:
        img = np.asarray(load(item[key]), dtype=np.float64)
        flat = img.reshape(img.shape[0], -1)
        if not np.isfinite(flat).all():
            raise ValueError(f"{item[key]} contains NaN or infinite values; fix or remove the image.")
        if total is not None and flat.shape[0] != total.shape[0]:
            raise ValueError(
                f"{item[key]} has {flat.shape[0]} channel(s) but {datalist[0][key]} has {total.shape[0]}: all "
                "images need the same channels (the bundle's --in_channels); convert or remove the odd one."
            )
        s, sq = flat.sum(1), (flat**2).sum(1)
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
        count = flat.shape[1] + (count or 0)
    if total is None:
        raise ValueError("No images to compute intensity statistics from.")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    if (std == 0).any():
        raise ValueError("The training images are constant in some channel; they cannot be normalised.")
    return {"mean": mean.tolist(), "std": std.tolist()}


def save_intensity_stats(stats: dict[str, list[float]], path: str | os.PathLike) -> dict[str, list[float]]:
    """Write ``stats`` as JSON (creating the folder, atomically; under ``torchrun`` on rank 0 only) and return
    them, so a config can chain it."""
    from ..utils import write_text_atomic

    write_text_atomic(path, json.dumps(stats, indent=2))
    return stats


def load_intensity_stats(path: str | os.PathLike) -> dict[str, list[float]]:
    """Read the statistics written at training time.

    Raises:
        FileNotFoundError: when the file is missing (the model was not trained with this bundle, or the
            file was not shared with the weights).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: it holds the training images' intensity statistics and is written by the "
            "training config next to the weights; copy it along with model.pt or retrain."
        )
    stats = json.loads(path.read_text())
    if not {"mean", "std"} <= set(stats):
        raise ValueError(f"{path} must hold 'mean' and 'std' lists; it holds {sorted(stats)}.")
    return stats


def label_coverage(
    splits: dict[str, Any],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    key: str = "label",
) -> dict[str, list[int]]:
    """Labelled pixels per class in the training and the validation share, with a warning for each gap.

    Training runs without these silently: a class with no training click is never learned; a class with no
    validation point has a ``nan`` validation Dice; with no validation point at all every validation is ``nan``
    and ``model.pt`` stays at the first epoch. Each case warns (``UserWarning``) with what to add.

    Args:
        splits: the output of :func:`dataset_splits` (a ``val/`` folder, or a held-out share of the points).
        num_classes: class ids are ``1..num_classes``.
        class_names: names for the messages (default: the ids).
        seed: the seed of the held-out split (:class:`~epsseg_monai.transforms.SplitSparseLabels`).
        key: the label key of the data lists.

    Returns:
        ``{"train": [n_1, ..., n_C], "val": [...]}``, labelled pixels per class.
    """
    from ..transforms.load_image import LoadMicroscopyImage
    from ..transforms.sparse_split import SplitSparseLabels

    load = LoadMicroscopyImage()
    fraction = float(splits.get("holdout_fraction", 0.0))
    counts = {}
    for part in ("train", "val"):
        split = SplitSparseLabels(fraction, part, seed) if fraction > 0 else None
        total = np.zeros(num_classes + 1, dtype=np.int64)
        for item in splits[part]:
            label = np.asarray(load(item[key])).astype(np.int64).reshape(-1)
            if split is not None:
                label = np.asarray(split(label))
            total += np.bincount(label[(label >= 0) & (label <= num_classes)], minlength=num_classes + 1)
        counts[part] = total[1:].tolist()
    names = [str(c) for c in range(1, num_classes + 1)]
    if class_names is not None and len(class_names) == num_classes:
        names = [str(n) for n in class_names]
    where = "the val/ folder" if fraction == 0 else f"the held-out {fraction:.0%} of the clicks (--val_fraction)"
    for c in range(num_classes):
        if counts["train"][c] == 0:
            warnings.warn(
                f"Class {names[c]!r} (id {c + 1}) has no click in the training labels: the network cannot learn it. "
                "Add clicks of that class, or set --num_classes / --class_names to the classes you labelled.",
                stacklevel=2,
            )
    if not splits["val"]:  # no validation asked for (--val_fraction 0): see check_validation
        return counts
    if sum(counts["val"]) == 0:
        warnings.warn(
            f"No validation point in {where}: every validation Dice will be nan and model.pt will keep the first "
            "epoch's weights. Add at least 2 clicks per class (one stays in training), or a val/ folder.",
            stacklevel=2,
        )
    else:
        for c in range(num_classes):
            if counts["val"][c] == 0 and counts["train"][c] > 0:
                warnings.warn(
                    f"Class {names[c]!r} (id {c + 1}) has no validation point in {where}: its validation Dice is "
                    "nan. Add more clicks of that class (with one click it stays in training).",
                    stacklevel=2,
                )
    return counts
