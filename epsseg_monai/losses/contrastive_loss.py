"""Margin-based contrastive loss on sparse labels over the latent means of every level."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from epsseg_monai.utils import UNLABELLED

__all__ = ["SparseContrastiveLoss", "pairwise_distances"]


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of ``x`` (N, D); zero-distance pairs have zero gradient.

    The rows are centred first (distances do not change) so the Gram-matrix form stays accurate when the
    features are large compared with their spread.
    """
    x = x - x.mean(dim=0, keepdim=True)
    sq = x.pow(2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
    return d2.clamp(min=1e-12).sqrt()


class SparseContrastiveLoss(_Loss):
    """Pull latent means of same-class samples together, push different classes beyond a margin.

    On the labelled samples of the batch (label ``0`` = unlabelled, ignored), with Euclidean distances ``d``
    between flattened posterior means of each level ``l`` (weights ``w_l``, by default ``1/4, 1/2, 1``
    from bottom to top, i.e. halving per level below the top):

    - positive term ``P = sum_l w_l * mean(d over same-class pairs)``;
    - negative term per class pair ``(a, b)``: ``N_ab = sum_l w_l * mean over a-b pairs of
      [d < m] * (1 / (d + eps) + (m - d)**2)`` (pairs beyond the margin count as 0, as in the reference
      code); the pairs are combined with weights ``softmax(N)``: ``N = sum_ab softmax(N)_ab * N_ab``;
    - loss ``0.5 * P + 0.5 * N``.

    Args:
        margin: distance beyond which different classes are not pushed (20 in the reference code).
        level_weights: weight of each level, bottom to top; default halves per level below the top.
        eps: added to distances in ``1 / (d + eps)``.
        reduction: ``"sum"`` (default, the reference scale) or ``"mean"`` (divided by the sum of the level
            weights) give the scalar loss; ``"none"`` returns the two terms ``(0.5 * P, 0.5 * N)``, shape
            ``(2,)``, whose sum is the ``"sum"`` loss.
    """

    def __init__(
        self,
        margin: float = 20.0,
        level_weights: Sequence[float] | None = None,
        eps: float = 1e-6,
        reduction: LossReduction | str = LossReduction.SUM,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}.")
        self.margin = float(margin)
        self.level_weights = None if level_weights is None else [float(w) for w in level_weights]
        self.eps = float(eps)

    def _weights(self, num_levels: int) -> list[float]:
        if self.level_weights is None:
            return [2.0 ** -(num_levels - 1 - level) for level in range(num_levels)]
        if len(self.level_weights) != num_levels:
            raise ValueError(f"level_weights has {len(self.level_weights)} entries for {num_levels} latent levels.")
        return self.level_weights

    def forward(self, latents: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """
        Args:
            latents: posterior means, one tensor B[...] per level (bottom to top), or a single tensor.
            labels: class ids ``1..C`` per sample, ``0`` = unlabelled, shape ``(B,)``.

        Raises:
            ValueError: when the batch sizes of latents and labels disagree.
        """
        levels = [latents] if isinstance(latents, torch.Tensor) else list(latents)
        if not levels:
            raise ValueError("latents is empty.")
        batch = levels[0].shape[0]
        if labels.ndim != 1 or labels.shape[0] != batch or any(z.shape[0] != batch for z in levels):
            raise ValueError(
                f"Expected labels of shape (B,) and latents with batch B; got labels {tuple(labels.shape)} and "
                f"latents {[tuple(z.shape) for z in levels]}."
            )
        weights = self._weights(len(levels))
        labelled = labels != UNLABELLED
        zero = sum(z.sum() for z in levels) * 0.0
        if int(labelled.sum()) < 2:
            return torch.stack([zero, zero]) if self.reduction == LossReduction.NONE.value else zero
        lab = labels[labelled].long()
        classes, inverse = torch.unique(lab, return_inverse=True)
        onehot = torch.nn.functional.one_hot(inverse, classes.numel()).to(levels[0].dtype)  # (n, K)
        same = onehot @ onehot.T
        same.fill_diagonal_(0)
        num_same = same.sum()
        counts = onehot.sum(0)
        pair_counts = counts[:, None] * counts[None, :]
        upper = torch.triu(torch.ones_like(pair_counts, dtype=torch.bool), diagonal=1)

        positive = zero
        negative_pairs = zero + torch.zeros(int(upper.sum()), device=zero.device, dtype=zero.dtype)
        for weight, z in zip(weights, levels):
            d = pairwise_distances(z[labelled].flatten(1))
            if num_same > 0:
                positive = positive + weight * (same * d).sum() / num_same
            close = (d < self.margin).to(d.dtype)
            penalty = close * (1.0 / (d + self.eps) + (self.margin - d) ** 2)
            pair_sums = onehot.T @ penalty @ onehot  # (K, K): summed penalties between classes a and b
            negative_pairs = negative_pairs + weight * (pair_sums / pair_counts.clamp(min=1))[upper]
        negative = (torch.softmax(negative_pairs, 0) * negative_pairs).sum() if negative_pairs.numel() else zero

        terms = torch.stack([0.5 * positive, 0.5 * negative])
        if self.reduction == LossReduction.NONE.value:
            return terms
        total = terms.sum()
        if self.reduction == LossReduction.MEAN.value:
            total = total / sum(weights)
        return total
