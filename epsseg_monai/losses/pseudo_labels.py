"""Pseudo-labels for unlabelled neighbour patches: the nearest class mean of the batch's labelled anchors."""

from __future__ import annotations

import torch

from epsseg_monai.utils import UNLABELLED

__all__ = ["PseudoLabeller", "class_mean_pseudo_labels"]


def class_mean_pseudo_labels(
    latents: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5, temperature: float = 200.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label unlabelled samples with the class whose mean latent is nearest, where confident enough.

    ``latents`` (top-level posterior means, B[...]) are flattened per sample. The labelled samples (the
    anchors, labels ``1..C``) give one mean per class present in the batch; each sample ``i`` gets the
    probabilities ``softmax_c(-||x_i - m_c||**2 / temperature)`` over those classes. An unlabelled sample
    (label ``0``) takes the most probable class when its probability is ``>= threshold`` and stays ``0``
    otherwise; labelled samples keep their labels. Classes absent from the batch's anchors are not
    candidates (the reference code compares with an all-zero "mean" for them), and with fewer than two
    classes present nothing is pseudo-labelled (a single candidate would always win with probability 1).
    Computed without gradient: the pseudo-labels are targets, not functions of the parameters.

    Args:
        latents: top-level posterior means, shape B[...].
        labels: class ids ``1..C``, ``0`` = unlabelled, shape ``(B,)``.
        threshold: smallest accepted probability of the most probable class.
        temperature: divides the squared distances (200 in ε-Seg).

    Returns:
        ``(pseudo_labels, confidence)``, both shape ``(B,)``: the labels with the accepted pseudo-labels filled
        in (``torch.long``), and the probability of the most probable class (``0`` where it is undefined, i.e.
        with fewer than two classes present).

    Raises:
        ValueError: when shapes disagree or ``temperature <= 0``.
    """
    if labels.ndim != 1 or latents.ndim < 2 or latents.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Expected latents B[...] and labels (B,), got {tuple(latents.shape)} and {tuple(labels.shape)}."
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    with torch.no_grad():
        labels = labels.to(device=latents.device, dtype=torch.long)
        pseudo = labels.clone()
        confidence = torch.zeros(labels.shape, dtype=torch.float32, device=latents.device)
        labelled = labels != UNLABELLED
        classes = torch.unique(labels[labelled])
        if classes.numel() < 2:
            return pseudo, confidence
        x = latents.detach().flatten(1).float()
        onehot = (labels[labelled, None] == classes[None, :]).float()  # (n_labelled, K)
        means = (onehot.T @ x[labelled]) / onehot.sum(0)[:, None]  # (K, D)
        dist2 = (x[:, None, :] - means[None]).pow(2).sum(-1)  # (B, K), exact (no Gram-matrix cancellation)
        probs = torch.softmax(-dist2 / temperature, dim=1)
        confidence, best = probs.max(dim=1)
        accept = ~labelled & (confidence >= threshold)
        pseudo[accept] = classes[best[accept]]
    return pseudo, confidence


class PseudoLabeller:
    """:func:`class_mean_pseudo_labels` with a mutable :attr:`threshold` (raised by a schedule between epochs).

    After a call, :attr:`fraction` holds the fraction of unlabelled samples that received a pseudo-label (0
    when there were none) and :attr:`confidence` the per-sample confidences.

    Args:
        threshold: initial confidence threshold (0.5 in ε-Seg).
        temperature: divides the squared distances (200 in ε-Seg).
    """

    def __init__(self, threshold: float = 0.5, temperature: float = 200.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.fraction = 0.0
        self.confidence: torch.Tensor | None = None

    def __call__(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Labels with the accepted pseudo-labels filled in, see :func:`class_mean_pseudo_labels`."""
        pseudo, self.confidence = class_mean_pseudo_labels(latents, labels, self.threshold, self.temperature)
        unlabelled = labels.to(pseudo.device) == UNLABELLED
        self.fraction = float((pseudo[unlabelled] != UNLABELLED).float().mean()) if bool(unlabelled.any()) else 0.0
        return pseudo
