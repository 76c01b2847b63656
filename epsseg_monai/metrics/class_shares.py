"""How often each class occurs, and the dense Dice a model would score, estimated from held-out clicks alone.

Clicks are placed class-balanced (the same number per class), so a classifier trained on them assumes equal class
frequencies, and a Dice averaged over held-out clicks weighs a rare class as much as the commonest one. In a real
image the classes are far from equal (VNC: 74 % intracellular, 2.9 % glia): a few per cent of intracellular pixels
predicted as mitochondria barely move the click Dice and halve the mitochondria Dice of the dense map.

Two facts about class-balanced clicks make the dense numbers recoverable without dense labels:

* within a class, held-out clicks are a random sample of that class's pixels, so the row of the click confusion
  matrix, normalised, estimates ``P(predicted k | true c)`` on every pixel of the class;
* the model's dense prediction of the (unlabelled) images gives the predicted share of each class, ``q``, and
  ``q = M^T s`` links it to the true shares ``s`` through that matrix ``M`` ("adjusted count" quantification,
  Forman, Data Mining and Knowledge Discovery 17, 2008), solved here with non-negative least squares.

With ``M`` and ``s`` the expected dense confusion matrix is ``diag(s) M``, and from it the Dice per class
(:func:`estimated_dense_dice`). :func:`select_prior_strength` uses that estimate to choose how far the
probabilities are shifted towards the estimated class shares (:class:`~epsseg_monai.transforms.ShiftClassPriors`),
a choice the plain click Dice cannot make: it always prefers the equal priors the clicks were drawn with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_tensor
from scipy.optimize import nnls

from ..transforms.prior_adjustment import shift_class_priors
from ..utils import unwrap_network
from .sparse_dice import dice_counts, dice_from_counts

__all__ = [
    "DEFAULT_STRENGTHS",
    "calibrate_after_training",
    "calibrate_class_priors",
    "click_confusion",
    "estimate_class_shares",
    "estimated_dense_dice",
    "load_class_priors",
    "predict_at_clicks",
    "prior_calibration_transform",
    "select_prior_strength",
    "shift_gain_confidence",
]

logger = logging.getLogger(__name__)

DEFAULT_STRENGTHS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def click_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion counts ``(C, C)`` at the labelled pixels: row = true class, column = predicted class.

    Args:
        pred: predicted class ids ``1..C`` (``0``: not predicted, ignored), any shape.
        target: clicked class ids ``1..C`` (``0``: unlabelled, ignored), the same shape.
        num_classes: ``C``.
    """
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from click shape {tuple(target.shape)}.")
    valid = (pred > 0) & (target > 0)
    p, t = pred[valid].long(), target[valid].long()
    if (p > num_classes).any() or (t > num_classes).any() or (p < 0).any() or (t < 0).any():
        raise ValueError(f"class ids outside 0..num_classes={num_classes} found.")
    index = (t - 1) * num_classes + (p - 1)
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _row_rates(confusion: torch.Tensor) -> np.ndarray:
    counts = torch.as_tensor(confusion).double().numpy()
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"Expected a square (C, C) confusion matrix, got shape {counts.shape}.")
    totals = counts.sum(1, keepdims=True)
    if (totals == 0).any():
        missing = [int(c) + 1 for c in np.flatnonzero(totals[:, 0] == 0)]
        raise ValueError(
            f"No held-out click of class(es) {missing}: their error rates cannot be estimated. Click each class "
            "at least a few times (or hold out a larger --val_fraction)."
        )
    return counts / totals


def estimate_class_shares(confusion: torch.Tensor, predicted_shares: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """True class shares ``s`` from the predicted shares ``q`` of unlabelled images and the click confusion.

    Solves ``q = M^T s`` with ``s >= 0`` (non-negative least squares, then normalised to sum 1), where ``M`` is the
    row-normalised ``confusion``: the classifier's errors, measured on held-out clicks, are undone from the share
    of each class it predicts.

    Args:
        confusion: ``(C, C)`` counts at held-out clicks (:func:`click_confusion`), computed with the same
            prediction rule that gave ``predicted_shares``.
        predicted_shares: ``(C,)`` share of the pixels predicted as each class on images of the same kind.

    Returns:
        ``(C,)`` float64 tensor, non-negative, summing to 1.
    """
    rates = _row_rates(confusion)
    q = np.asarray(torch.as_tensor(predicted_shares, dtype=torch.float64), dtype=np.float64)
    if q.shape != (rates.shape[0],) or (q < 0).any() or q.sum() <= 0:
        raise ValueError(f"predicted_shares must be {rates.shape[0]} non-negative values, got {q.tolist()}.")
    shares, _ = nnls(rates.T, q / q.sum())
    if shares.sum() <= 0:  # degenerate (every row predicts nothing that was predicted): fall back to q
        shares = q
    return torch.as_tensor(shares / shares.sum())


def estimated_dense_dice(confusion: torch.Tensor, class_shares: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Dice per class of a dense map, estimated from click confusion counts and the true class shares.

    The expected dense confusion matrix is ``diag(s) M`` (``M`` the row-normalised click confusion), from which
    ``TP``, ``FP`` and ``FN`` of each class follow. A class with share 0 that is never predicted gets NaN.

    Args:
        confusion: ``(C, C)`` counts at held-out clicks.
        class_shares: ``(C,)`` true share of each class (e.g. :func:`estimate_class_shares`).
    """
    rates = _row_rates(confusion)
    s = np.asarray(torch.as_tensor(class_shares, dtype=torch.float64), dtype=np.float64)
    if s.shape != (rates.shape[0],) or (s < 0).any():
        raise ValueError(f"class_shares must be {rates.shape[0]} non-negative values, got {s.tolist()}.")
    dense = s[:, None] * rates
    tp = np.diag(dense)
    fp = dense.sum(0) - tp
    fn = dense.sum(1) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
    return torch.as_tensor(dice)


def _click_arrays(click_probs: torch.Tensor, click_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``click_probs`` as float64 ``(C, N)`` and ``click_labels`` as int64 ``(N,)``, their shapes checked."""
    probs = torch.as_tensor(click_probs).double()
    labels = torch.as_tensor(click_labels).long()
    if probs.ndim != 2 or labels.shape != (probs.shape[1],):
        raise ValueError(
            f"Expected click_probs (C, N) and click_labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}."
        )
    return probs, labels


def select_prior_strength(
    click_probs: torch.Tensor,
    click_labels: torch.Tensor,
    class_shares: Sequence[float] | torch.Tensor,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    train_priors: Sequence[float] | None = None,
) -> tuple[float, dict[float, float]]:
    """The prior-shift strength whose predictions have the highest estimated dense mean Dice.

    For each strength ``t`` the probabilities at the held-out clicks are shifted by ``(s / train_priors) ** t``
    (:func:`~epsseg_monai.transforms.prior_adjustment.shift_class_priors`), classified, and scored with
    :func:`estimated_dense_dice`. Ties go to the smallest strength (the least change).

    Args:
        click_probs: ``(C, N)`` class probabilities at ``N`` held-out clicks.
        click_labels: ``(N,)`` their class ids ``1..C``.
        class_shares: ``(C,)`` estimated true class shares.
        strengths: candidates, each in ``[0, 1]`` (``0``: no shift, ``1``: Bayes' rule with the estimated shares).
        train_priors: the class frequencies the model was trained with (``None``: uniform, class-balanced clicks).

    Returns:
        ``(best strength, {strength: estimated mean Dice})``.
    """
    probs, labels = _click_arrays(click_probs, click_labels)
    if not strengths:
        raise ValueError("strengths must not be empty.")
    num_classes = probs.shape[0]
    scores: dict[float, float] = {}
    for strength in strengths:
        shifted = shift_class_priors(probs, class_shares, strength, train_priors)
        confusion = click_confusion(shifted.argmax(0) + 1, labels, num_classes)
        scores[float(strength)] = float(np.nanmean(estimated_dense_dice(confusion, class_shares).numpy()))
    best = max(scores.values())
    return min(s for s, v in scores.items() if v >= best), scores


def shift_gain_confidence(
    click_probs: torch.Tensor,
    click_labels: torch.Tensor,
    class_shares: Sequence[float] | torch.Tensor,
    strength: float,
    predicted_shares: Sequence[float] | torch.Tensor | None = None,
    train_priors: Sequence[float] | None = None,
    num_resamples: int = 500,
    seed: int = 0,
) -> float:
    """How sure the held-out clicks are that shifting by ``strength`` raises the estimated dense mean Dice.

    The fraction of bootstrap resamples of the clicks (drawn with replacement within each class, so every class
    keeps its number of clicks) in which the shifted predictions have a higher estimated dense mean Dice
    (:func:`estimated_dense_dice`) than the plain ones; ties count half. With ``predicted_shares`` the class shares
    are estimated again from each resample (:func:`estimate_class_shares`), so their uncertainty counts too; the
    shift itself keeps ``class_shares``. :func:`select_prior_strength` picks the best of several strengths on the
    same clicks, so its estimated gain is optimistic where the clicks are few (36 per class at VNC 0.005 %): this
    measures how far that gain stands out from the clicks' noise.

    Args:
        click_probs: ``(C, N)`` class probabilities at ``N`` held-out clicks.
        click_labels: ``(N,)`` their class ids ``1..C``.
        class_shares: ``(C,)`` estimated true class shares (those the shift uses).
        strength: the shift's strength in ``[0, 1]``.
        predicted_shares: ``(C,)`` share of the pixels predicted as each class (``None``: keep ``class_shares``).
        train_priors: the class frequencies the model was trained with (``None``: uniform).
        num_resamples: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        A fraction in ``[0, 1]``; ``0.5`` for ``strength == 0`` (no change).
    """
    probs, labels = _click_arrays(click_probs, click_labels)
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}.")
    if strength == 0:
        return 0.5
    num_classes = probs.shape[0]
    plain = (probs.argmax(0) + 1).numpy()
    shifted = (shift_class_priors(probs, class_shares, strength, train_priors).argmax(0) + 1).numpy()
    truth = labels.numpy()
    by_class = [np.flatnonzero(truth == c) for c in range(1, num_classes + 1)]
    rng = np.random.default_rng(seed)
    wins = 0.0
    for _ in range(num_resamples):
        idx = np.concatenate([rng.choice(i, size=i.size, replace=True) for i in by_class if i.size])
        t = torch.as_tensor(truth[idx])
        before = click_confusion(torch.as_tensor(plain[idx]), t, num_classes)
        after = click_confusion(torch.as_tensor(shifted[idx]), t, num_classes)
        shares = class_shares if predicted_shares is None else estimate_class_shares(before, predicted_shares)
        gain = np.nanmean(estimated_dense_dice(after, shares).numpy()) - np.nanmean(
            estimated_dense_dice(before, shares).numpy()
        )
        wins += 1.0 if gain > 0 else 0.5 if gain == 0 else 0.0
    return wins / num_resamples


def predict_at_clicks(
    network: torch.nn.Module,
    dataset: Iterable[Mapping[str, Any]],
    inferer: Callable[[torch.Tensor, torch.nn.Module], torch.Tensor],
    num_classes: int,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predict every image of ``dataset`` densely: pixels predicted per class, and the probabilities at its clicks.

    Args:
        network: the trained network (put in eval mode here).
        dataset: items with an ``image`` ``C[spatial]`` (normalised as for training) and a ``label`` ``1[spatial]``
            (or ``[spatial]``) of clicks, ``0`` = none.
        inferer: dense inferer, ``inferer(images B C [spatial], network) -> probabilities B K [spatial]``.
        num_classes: ``K``.
        device: where to predict (default: the network's device).

    Returns:
        ``(counts (K,) float64 of pixels predicted as each class, probabilities (K, N) at the N clicks, their class
        ids (N,))``.
    """
    device = next(network.parameters()).device if device is None else torch.device(device)
    network.eval()
    predicted = torch.zeros(num_classes, dtype=torch.float64)
    probs_at_clicks, labels_at_clicks = [], []
    with torch.no_grad():
        for item in dataset:
            image = convert_to_tensor(item["image"], track_meta=False).float().to(device)
            label = convert_to_tensor(item["label"], track_meta=False).long().reshape(image.shape[1:])
            probs = convert_to_tensor(inferer(image[None], network), track_meta=False)[0].double().cpu()
            if probs.shape[0] != num_classes:
                raise ValueError(f"The inferer gave {probs.shape[0]} classes, expected num_classes={num_classes}.")
            predicted += torch.bincount(probs.argmax(0).reshape(-1), minlength=num_classes).double()
            clicked = label > 0
            probs_at_clicks.append(probs[:, clicked])
            labels_at_clicks.append(label[clicked])
    if sum(int(lab.numel()) for lab in labels_at_clicks) == 0:
        raise ValueError(
            "No held-out clicks to calibrate with: keep --val_fraction > 0 (or a val/ folder with labelled clicks)."
        )
    return predicted, torch.cat(probs_at_clicks, 1), torch.cat(labels_at_clicks)


def calibrate_class_priors(
    network: torch.nn.Module,
    dataset: Iterable[Mapping[str, Any]],
    inferer: Callable[[torch.Tensor, torch.nn.Module], torch.Tensor],
    num_classes: int,
    output_file: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    device: torch.device | str | None = None,
    overwrite: bool = True,
    confidence: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Estimate the class shares and choose the prior-shift strength of a trained model from held-out clicks.

    Every image of ``dataset`` (items with an ``image`` ``C[spatial]``, normalised as for training, and a
    ``label`` ``1[spatial]`` holding only the held-out clicks, as the bundle's validation dataset has them) is
    predicted densely; the predicted class shares of all its pixels and the probabilities at its clicks give
    :func:`estimate_class_shares` and :func:`select_prior_strength`. Nothing else is used: no dense labels. With
    ``confidence > 0`` the chosen shift is kept only where :func:`shift_gain_confidence` (a bootstrap of the
    held-out clicks) finds it better than no shift in at least that share of the resamples; otherwise the
    strength is 0 and the predictions stay as they are.

    Args:
        network: the trained network (weights loaded, or see ``checkpoint``).
        dataset: the images with their held-out clicks.
        inferer: dense inferer, ``inferer(images B C [spatial], network) -> probabilities B K [spatial]``.
        num_classes: ``K``.
        output_file: where to write the report as JSON (``models/class_priors.json`` in the bundle); ``None``
            writes nothing.
        checkpoint: weights to load into ``network`` first (a state dict, or one under ``"model"``).
        class_names: names of the classes, for the report.
        strengths: candidate strengths (see :func:`select_prior_strength`).
        device: where to predict (default: the network's device).
        overwrite: replace an existing ``output_file`` (otherwise refused, naming it).
        confidence: required bootstrap confidence of the shift's gain in ``[0, 1)`` (``0``: keep the best
            strength whatever its margin).
        seed: seed of the bootstrap.

    Returns:
        The report: ``class_shares`` (estimated), ``predicted_shares``, ``strength`` (chosen),
        ``estimated_dense_dice`` (mean, per strength), ``estimated_dense_dice_per_class`` (without and with the
        chosen shift), ``click_dice`` (plain mean over held-out clicks, without the shift), ``held_out_clicks``
        (per class), ``class_names`` and, with ``confidence > 0``, ``best_strength`` (before the check),
        ``gain_confidence`` and ``confidence``.
    """
    from ..utils import check_network_state, load_checkpoint

    if output_file is not None and os.path.exists(output_file) and not overwrite:
        raise FileExistsError(f"{output_file} already exists; pass --overwrite true to replace it.")
    if not 0.0 <= confidence < 1.0:
        raise ValueError(f"calibration_confidence must be in [0, 1), got {confidence}.")
    network = unwrap_network(network)
    if checkpoint is not None:
        network.load_state_dict(check_network_state(load_checkpoint(checkpoint), network, checkpoint))
    predicted, click_probs, click_labels = predict_at_clicks(network, dataset, inferer, num_classes, device)
    confusion = click_confusion(click_probs.argmax(0) + 1, click_labels, num_classes)
    q = predicted / predicted.sum()
    shares = estimate_class_shares(confusion, q)
    strength, estimates = select_prior_strength(click_probs, click_labels, shares, strengths)
    best_strength, gain_confidence = strength, None
    if confidence > 0:
        gain_confidence = shift_gain_confidence(click_probs, click_labels, shares, strength, q, seed=seed)
        if gain_confidence < confidence:
            logger.info(
                "The best prior shift (strength %g, estimated %+.3f dense mean Dice) beats no shift in %.0f%% of "
                "the bootstrap resamples of the held-out clicks, below the %.0f%% asked for "
                "(--calibration_confidence): no shift.",
                strength, estimates[strength] - estimates.get(0.0, estimates[strength]), 100 * gain_confidence,
                100 * confidence,
            )  # fmt: skip
            strength = 0.0
    shifted = shift_class_priors(click_probs, shares, strength)
    calibrated = click_confusion(shifted.argmax(0) + 1, click_labels, num_classes)
    plain_click = dice_from_counts(dice_counts(click_probs.argmax(0) + 1, click_labels, num_classes)).nanmean()
    report = {
        "class_names": list(class_names) if class_names is not None else [str(i) for i in range(1, num_classes + 1)],
        "class_shares": [round(float(v), 6) for v in shares],
        "predicted_shares": [round(float(v), 6) for v in q],
        "strength": strength,
        "estimated_dense_dice": {f"{k:g}": round(v, 4) for k, v in estimates.items()},
        "estimated_dense_dice_per_class": {
            "without_shift": [round(float(v), 4) for v in estimated_dense_dice(confusion, shares)],
            "with_shift": [round(float(v), 4) for v in estimated_dense_dice(calibrated, shares)],
        },
        "click_dice": round(float(plain_click), 4),
        "held_out_clicks": [int(v) for v in confusion.sum(1)],
        "checkpoint_md5": None if checkpoint is None else file_md5(checkpoint),
    }
    if gain_confidence is not None:
        report.update(best_strength=best_strength, gain_confidence=round(gain_confidence, 4), confidence=confidence)
    logger.info(
        "Class shares estimated from %d held-out clicks: %s; prior shift strength %g; estimated dense mean Dice "
        "%.3f without the shift, %.3f with it (mean Dice at the clicks: %.3f).",
        int(click_labels.numel()), report["class_shares"], strength, estimates[0.0] if 0.0 in estimates else
        float("nan"), estimates[strength], report["click_dice"],
    )  # fmt: skip
    if output_file is not None:
        os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
        tmp = f"{output_file}.tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, output_file)
    return report


def calibrate_after_training(
    calibration: Callable[..., dict[str, Any]], enabled: bool | str, ckpt_dir: str | os.PathLike
) -> dict[str, Any] | None:
    """Run ``calibration(overwrite=True)`` once training has written ``ckpt_dir/model.pt``, if ``enabled``.

    The last step of the bundle's training configs (``train.json``, and the second phase of ``semi_supervised.json``
    and ``self_train.json``) under ``--calibrate_after_training true``: only the main process calibrates, and a run
    that wrote no ``model.pt`` (stopped before its first validation) is left without a calibration.

    Args:
        calibration: :func:`calibrate_class_priors` with every argument but ``overwrite`` bound (the bundle's
            ``calibration``).
        enabled: ``--calibrate_after_training`` (a flag; strings ``"true"``/``"false"`` are accepted).
        ckpt_dir: the run's ``models`` folder.

    Returns:
        The calibration report, or ``None`` when nothing was calibrated.
    """
    from ..utils import as_flag, is_main_process

    if not as_flag(enabled, "calibrate_after_training") or not is_main_process():
        return None
    if not os.path.isfile(os.path.join(ckpt_dir, "model.pt")):
        logger.warning(f"No {os.path.join(ckpt_dir, 'model.pt')} was written; the class-share calibration is skipped.")
        return None
    return calibration(overwrite=True)


def file_md5(path: str | os.PathLike) -> str:
    """The MD5 of a file (which weights a calibration belongs to)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def calibration_matches(path: str | os.PathLike, checkpoint: str | os.PathLike) -> bool:
    """Whether the calibration ``path`` was computed for the weights in ``checkpoint`` (their MD5)."""
    try:
        with open(path) as f:
            recorded = json.load(f).get("checkpoint_md5")
    except (OSError, ValueError, AttributeError):
        return False
    return _md5_matches(recorded, checkpoint)


def _md5_matches(recorded: Any, checkpoint: str | os.PathLike) -> bool:
    return recorded is not None and os.path.isfile(checkpoint) and recorded == file_md5(checkpoint)


def _read_class_priors(path: str | os.PathLike, num_classes: int | None = None) -> tuple[dict[str, Any], Any]:
    """The shift arguments of the report ``path`` and the MD5 of the weights it was computed for."""
    path = os.fspath(path)
    fix = (
        "run the calibration first: python -m monai.bundle run calibrate --config_file bundle/configs/train.json "
        "(with the preset and --dataset_dir of the training run), or pass --calibrate_priors false."
    )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Class-prior calibration {path} not found; {fix}")
    try:
        with open(path) as f:
            report = json.load(f)
        priors, strength = [float(v) for v in report["class_shares"]], float(report["strength"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a class-prior calibration ({e}); {fix}") from e
    if num_classes is not None and len(priors) != num_classes:
        raise ValueError(
            f"{path} holds {len(priors)} class shares but the model has {num_classes} classes (a calibration of "
            f"another model?); {fix}"
        )
    return {"priors": priors, "strength": strength}, report.get("checkpoint_md5")


def load_class_priors(path: str | os.PathLike, num_classes: int | None = None) -> dict[str, Any]:
    """``{"priors": ..., "strength": ...}`` from a :func:`calibrate_class_priors` report, for
    :class:`~epsseg_monai.transforms.ShiftClassPriorsd`; a missing or foreign file is refused with the fix."""
    return _read_class_priors(path, num_classes)[0]


def prior_calibration_transform(
    path: str | os.PathLike,
    calibrate_priors: bool | str = "auto",
    num_classes: int | None = None,
    adjust_priors: bool = False,
    keys: str = "pred",
    checkpoint: str | os.PathLike | None = None,
) -> Any:
    """The ``ShiftClassPriorsd`` that ``inference.json --calibrate_priors`` applies, or ``None``.

    Args:
        path: the training run's ``class_priors.json`` (:func:`calibrate_class_priors`).
        calibrate_priors: ``True`` (the file must exist), ``False`` (never) or ``"auto"`` (when the file exists and
            the EM adjustment is not asked for: a model trained with ``--calibrate_after_training true``, as
            ``presets/plus.json`` does, predicts with its shift).
        num_classes: the model's class count, checked against the file.
        adjust_priors: ``inference.json --adjust_priors`` (EM per image); refused together with ``True``.
        keys: the probability key.
        checkpoint: the weights that will predict; a calibration computed for other weights (a later training
            into the same folder) is skipped with a warning under ``"auto"`` and refused under ``True``.
    """
    from ..transforms.prior_adjustment import ShiftClassPriorsd
    from ..utils import as_flag

    calibrate_priors = as_flag(calibrate_priors, "calibrate_priors", allow_auto=True)
    adjust_priors = as_flag(adjust_priors, "adjust_priors")
    if calibrate_priors is True and adjust_priors:
        raise ValueError(
            "--adjust_priors and --calibrate_priors cannot be used together: both rescale the class probabilities "
            "(EM per image, or the shares calibrated on held-out clicks); choose one."
        )
    if calibrate_priors is False or (calibrate_priors == "auto" and (adjust_priors or not os.path.isfile(path))):
        return None
    shift, recorded_md5 = _read_class_priors(path, num_classes)
    if checkpoint is not None and not _md5_matches(recorded_md5, checkpoint):
        message = (
            f"{path} was computed for other weights than {checkpoint} (trained again since?); run "
            "python -m monai.bundle run calibrate --config_file bundle/configs/train.json (with the preset and "
            "--dataset_dir of the training run) --overwrite true"
        )
        if calibrate_priors is True:
            raise ValueError(message + ", or pass --calibrate_priors false.")
        warnings.warn(message + ". Predicting without the class-share calibration.", stacklevel=2)
        return None
    logger.info(f"Shifting the class probabilities towards the calibrated class shares of {path}: {shift}.")
    return ShiftClassPriorsd(keys, **shift)
