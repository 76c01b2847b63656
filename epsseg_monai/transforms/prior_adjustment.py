"""Class-prior adjustment of predicted probabilities (EM re-estimation of the image's class frequencies).

ε-Seg trains on class-balanced batches of sparse clicks, so its class probabilities assume equal class
frequencies. In a real image the classes are far from equal (VNC: 74 % intracellular, 2.9 % glia), and
rare classes are over-predicted. Sparse clicks carry no frequency information, but the unlabelled image
does: the EM procedure of Saerens, Latinne & Decaestecker (Neural Computation 14, 2002) re-estimates the
class frequencies of the image from the predictions themselves and rescales the probabilities with them
(Bayes' rule with the new prior), with no labels and no retraining.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type, convert_to_tensor

__all__ = [
    "AdjustClassPriors",
    "AdjustClassPriorsD",
    "AdjustClassPriorsDict",
    "AdjustClassPriorsd",
    "ShiftClassPriors",
    "ShiftClassPriorsD",
    "ShiftClassPriorsDict",
    "ShiftClassPriorsd",
    "em_class_priors",
    "shift_class_priors",
]


def _priors(values: Sequence[float] | torch.Tensor | None, c: int, name: str) -> torch.Tensor:
    if values is None:
        return torch.full((c,), 1.0 / c, dtype=torch.float64)
    out = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if out.shape != (c,) or (out < 0).any() or out.sum() <= 0:
        raise ValueError(f"{name} must be {c} non-negative values with a positive sum, got {out.tolist()}.")
    return out / out.sum()


def shift_class_priors(
    probs: torch.Tensor,
    priors: Sequence[float] | torch.Tensor,
    strength: float = 1.0,
    train_priors: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Move class probabilities from the training priors towards given class frequencies.

    ``p'_c ∝ p_c (priors_c / train_priors_c) ** strength``: ``strength=1`` is Bayes' rule with the new priors,
    ``0`` leaves the probabilities as they are, values between interpolate on the log scale. A class with prior
    0 gets probability 0 at ``strength > 0``.

    Args:
        probs: class probabilities ``C[spatial]`` (or ``C N``).
        priors: ``(C,)`` target class frequencies (normalised here).
        strength: exponent in ``[0, 1]``.
        train_priors: class frequencies of training (``None``: uniform, as class-balanced clicks).

    Returns:
        shifted probabilities, same shape and dtype, summing to 1 over ``C`` (pixels with all-zero
        probabilities, i.e. not predicted, stay 0).
    """
    if probs.ndim < 2:
        raise ValueError(f"Expected class probabilities C[spatial], got shape {tuple(probs.shape)}.")
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}.")
    c = probs.shape[0]
    target, base = _priors(priors, c, "priors"), _priors(train_priors, c, "train_priors")
    if (base <= 0).any():
        raise ValueError(f"train_priors must all be positive, got {base.tolist()}.")
    if float(strength) == 0.0:
        return probs
    factor = (target / base) ** float(strength)
    shape = (c,) + (1,) * (probs.ndim - 1)
    shifted = probs.double() * factor.reshape(shape)
    total = shifted.sum(0, keepdim=True)
    shifted = torch.where(total > 0, shifted / total.clamp_min(1e-300), torch.zeros_like(shifted))
    return shifted.to(probs.dtype)


def em_class_priors(
    probs: torch.Tensor,
    train_priors: Sequence[float] | torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-estimate class priors of one image and adjust its probabilities (Saerens et al., 2002).

    Args:
        probs: class probabilities ``C[spatial]`` computed under ``train_priors``.
        train_priors: class frequencies the classifier was trained with (``None``: uniform, as ε-Seg's
            class-balanced batches).
        max_iter: EM iterations at most.
        tol: stop when no prior changes by more than this.
        mask: optional boolean ``[spatial]`` map of the pixels to estimate the priors from (e.g. the
            predicted ones); every pixel is adjusted.

    Returns:
        ``(adjusted probabilities like probs, estimated priors (C,))``.
    """
    if probs.ndim < 2:
        raise ValueError(f"Expected class probabilities C[spatial], got shape {tuple(probs.shape)}.")
    c = probs.shape[0]
    p = probs.double().reshape(c, -1)
    base = torch.full((c,), 1.0 / c, dtype=p.dtype) if train_priors is None else torch.as_tensor(train_priors).double()
    if base.shape != (c,) or (base <= 0).any():
        raise ValueError(f"train_priors must be {c} positive values, got {train_priors}.")
    base = base / base.sum()
    sample = p if mask is None else p[:, mask.reshape(-1).bool()]
    if sample.shape[1] == 0:
        return probs, base.float()
    priors = base.clone()
    for _ in range(max_iter):
        weighted = sample * (priors / base)[:, None]
        weighted = weighted / weighted.sum(0, keepdim=True).clamp_min(1e-300)
        new = weighted.mean(1)
        done = (new - priors).abs().max() < tol
        priors = new
        if done:
            break
    adjusted = p * (priors / base)[:, None]
    adjusted = adjusted / adjusted.sum(0, keepdim=True).clamp_min(1e-300)
    return adjusted.reshape(probs.shape).to(probs.dtype), priors.float()


class AdjustClassPriors(Transform):
    """Adjust channel-first class probabilities to the class frequencies EM estimates for the image.

    See :func:`em_class_priors`. Pixels whose probabilities are all 0 (not predicted) stay 0 and are
    left out of the estimate.

    Args:
        train_priors: class frequencies of training (``None``: uniform).
        max_iter: EM iterations at most.
        tol: convergence tolerance on the priors.
    """

    backend = [torch.Tensor.__name__]

    def __init__(self, train_priors: Sequence[float] | None = None, max_iter: int = 100, tol: float = 1e-6) -> None:
        self.train_priors = train_priors
        self.max_iter = max_iter
        self.tol = tol
        self.priors: torch.Tensor | None = None  #: the last estimate

    def __call__(self, probs: NdarrayOrTensor) -> NdarrayOrTensor:
        p = convert_to_tensor(probs, track_meta=False).float()
        predicted = p.sum(0) > 0
        adjusted, self.priors = em_class_priors(p, self.train_priors, self.max_iter, self.tol, mask=predicted)
        adjusted = torch.where(predicted[None], adjusted, torch.zeros_like(adjusted))
        return convert_to_dst_type(adjusted, probs)[0]


class AdjustClassPriorsd(MapTransform):
    """Dictionary version of :class:`AdjustClassPriors`.

    Args:
        keys: keys of the probability maps.
        train_priors: class frequencies of training (``None``: uniform).
        max_iter: EM iterations at most.
        tol: convergence tolerance on the priors.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        train_priors: Sequence[float] | None = None,
        max_iter: int = 100,
        tol: float = 1e-6,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.adjust = AdjustClassPriors(train_priors, max_iter, tol)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.adjust(d[key])
        return d


AdjustClassPriorsD = AdjustClassPriorsDict = AdjustClassPriorsd


class ShiftClassPriors(Transform):
    """Shift channel-first class probabilities towards fixed class frequencies (see :func:`shift_class_priors`).

    Unlike :class:`AdjustClassPriors`, which re-estimates the frequencies of every image by EM, the frequencies
    and the strength here are fixed, e.g. those estimated from held-out clicks after training
    (:func:`~epsseg_monai.metrics.estimate_class_shares`, :func:`~epsseg_monai.metrics.select_prior_strength`).

    Args:
        priors: ``(C,)`` target class frequencies.
        strength: exponent in ``[0, 1]``.
        train_priors: class frequencies of training (``None``: uniform).
    """

    backend = [torch.Tensor.__name__]

    def __init__(
        self, priors: Sequence[float], strength: float = 1.0, train_priors: Sequence[float] | None = None
    ) -> None:
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}.")
        self.priors, self.strength, self.train_priors = list(priors), float(strength), train_priors

    def __call__(self, probs: NdarrayOrTensor) -> NdarrayOrTensor:
        p = convert_to_tensor(probs, track_meta=False)
        shifted = shift_class_priors(p, self.priors, self.strength, self.train_priors)
        return convert_to_dst_type(shifted, probs)[0]


class ShiftClassPriorsd(MapTransform):
    """Dictionary version of :class:`ShiftClassPriors`.

    Args:
        keys: keys of the probability maps.
        priors: ``(C,)`` target class frequencies.
        strength: exponent in ``[0, 1]``.
        train_priors: class frequencies of training (``None``: uniform).
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        priors: Sequence[float],
        strength: float = 1.0,
        train_priors: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.shift = ShiftClassPriors(priors, strength, train_priors)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.shift(d[key])
        return d


ShiftClassPriorsD = ShiftClassPriorsDict = ShiftClassPriorsd
