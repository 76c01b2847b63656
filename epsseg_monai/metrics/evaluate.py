"""Score a folder of predicted label maps against dense labels: per-class and mean Dice, as JSON and CSV."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.image_io import image_stem, list_images
from .sparse_dice import _class_names, dice_counts, dice_from_counts

__all__ = ["evaluate_segmentations"]

logger = logging.getLogger(__name__)


def _mean(values: Sequence[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return float(np.mean(present)) if present else float("nan")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def evaluate_segmentations(
    pred_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    num_classes: int,
    output_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    distributed: bool = False,
) -> dict[str, Any]:
    """Dice per class and mean Dice of every prediction in ``pred_dir`` against the label of the same name.

    Pixels are counted where both maps are non-zero (``0`` = unlabelled in the labels, not predicted in
    the predictions), so dense labels give the usual Dice and predictions of a sampled pixel subset are
    scored on those pixels. The overall scores sum the counts over all images.

    Args:
        pred_dir: folder of predicted label maps (ids ``1..C``).
        label_dir: folder of dense (or sparse) label maps of the same names.
        num_classes: ``C``.
        output_dir: where ``dice.json`` and ``dice.csv`` are written.
        class_names: optional names of classes ``1..C`` for the reports.
        overwrite: replace an earlier ``dice.json`` / ``dice.csv`` in ``output_dir``; without it they are refused
            (``FileExistsError``) before anything is computed.
        distributed: under ``torch.distributed`` (``multi_gpu_evaluate.json``), each rank scores its share of the
            images (every ``world_size``-th), the counts and per-image scores are gathered, every rank returns the
            same report and rank 0 alone writes it. Without an initialised process group it is ignored.

    Returns:
        The report written to ``dice.json`` (there, the Dice of a class absent from both maps is ``null``;
        in the returned dict and the CSV it is NaN).
    """
    from ..transforms.load_image import LoadMicroscopyImage
    from ..utils import check_sparse_labels

    names = _class_names(num_classes, class_names)
    out = Path(output_dir)
    if not overwrite and (existing := [p.name for p in (out / "dice.json", out / "dice.csv") if p.exists()]):
        raise FileExistsError(
            f"{out} already holds {' and '.join(existing)} of an earlier evaluation: pass --overwrite true to "
            "replace them, or --output_dir NEW_FOLDER to keep both."
        )
    for folder, what, fix in ((pred_dir, "Prediction", "run the inference config first, or pass --pred_dir"),
                              (label_dir, "Label", "pass --label_dir with the dense label maps")):  # fmt: skip
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{what} folder {folder} does not exist; {fix}.")
    preds = {image_stem(p): p for p in list_images(pred_dir) if not image_stem(p).endswith("_prob")}
    labels = {image_stem(p): p for p in list_images(label_dir)}
    if not preds:
        raise FileNotFoundError(f"No predicted label maps in {pred_dir}; run the inference config first.")
    if missing := sorted(set(preds) - set(labels)):
        raise FileNotFoundError(
            f"No label in {label_dir} for prediction(s) {missing[:5]}; name labels like the images."
        )
    if unused := sorted(set(labels) - set(preds)):
        shown = f"{unused[:5]}{' ...' if len(unused) > 5 else ''}"
        logger.warning(
            "%d label map(s) in %s have no prediction in %s and are not scored: %s; predict them (inference config) "
            "to score every image.", len(unused), label_dir, pred_dir, shown,
        )  # fmt: skip
    load = LoadMicroscopyImage(ensure_channel_first=False)
    per_image: dict[str, dict[str, float]] = {}
    total = torch.zeros((num_classes, 3), dtype=torch.long)
    names_to_score = sorted(preds)
    dist = torch.distributed
    world = dist.get_world_size() if distributed and dist.is_available() and dist.is_initialized() else 1
    if world > 1:
        names_to_score = names_to_score[dist.get_rank() :: world]
    for name in names_to_score:
        p = torch.as_tensor(np.asarray(load(preds[name])))
        t = torch.as_tensor(np.asarray(load(labels[name])))
        if p.shape != t.shape:
            raise ValueError(f"{preds[name]} has shape {tuple(p.shape)} but {labels[name]} has {tuple(t.shape)}.")
        p, t = p.round().long(), t.round().long()
        if bad := sorted({int(v) for v in p.unique() if not 0 <= int(v) <= num_classes}):
            raise ValueError(
                f"{preds[name]} holds class id(s) {bad[:5]} outside 0..{num_classes} (the model's {num_classes} "
                f"classes {names}); was it predicted by a model with another number of classes? Predict it again."
            )
        check_sparse_labels(t, num_classes, name=str(labels[name]))
        counts = dice_counts(p, t, num_classes)
        total += counts
        dice = dice_from_counts(counts).tolist()
        per_image[name] = {**dict(zip(names, dice)), "mean": _mean(dice), "pixels": int(counts[:, [0, 2]].sum())}
    if world > 1:  # sum the counts, gather the per-image rows (in file order, as one process writes them)
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        summed = total.to(device) if device is not None else total
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        total = summed.cpu()
        shards: list[Any] = [None] * world
        dist.all_gather_object(shards, per_image)
        per_image = {name: row for shard in shards for name, row in shard.items()}
        per_image = {name: per_image[name] for name in sorted(per_image)}
    overall = dice_from_counts(total).tolist()
    report = {
        "overall": {**dict(zip(names, overall)), "mean": _mean(overall), "pixels": int(total[:, [0, 2]].sum())},
        "per_image": per_image,
        "pred_dir": str(pred_dir),
        "label_dir": str(label_dir),
        "labels_without_prediction": unused,
    }
    if world > 1 and dist.get_rank() != 0:
        return report
    out.mkdir(parents=True, exist_ok=True)
    (out / "dice.json").write_text(json.dumps(_nan_to_none(report), indent=2))  # strict JSON: NaN -> null
    with open(out / "dice.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *names, "mean", "pixels"])
        for name, row in [*per_image.items(), ("all", report["overall"])]:
            writer.writerow([name, *(f"{row[n]:.4f}" for n in names), f"{row['mean']:.4f}", row["pixels"]])
    logger.info(
        "mean Dice %.4f over %d image(s); per class %s",
        report["overall"]["mean"],
        len(per_image),
        {n: round(v, 4) for n, v in zip(names, overall)},
    )
    return report
