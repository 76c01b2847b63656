"""Cross-entropy at every labelled pixel of a dense logits map (ε-Seg+: many labelled pixels per pass)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from epsseg_monai.utils import UNLABELLED

__all__ = ["DenseSparseCrossEntropyLoss"]


class DenseSparseCrossEntropyLoss(_Loss):
    """Cross-entropy of per-pixel logits against a sparse label map, over the labelled pixels only.

    ε-Seg's head classifies a patch's centre pixel, one labelled pixel per forward pass. The network's dense
    pass (:meth:`~epsseg_monai.networks.EpsSegHVAE.forward_dense`) gives the same logits at every pixel of a
    crop, so a crop holding several labelled pixels (scribbles, or pseudo-labels) trains on all of them at once.

    Args:
        reduction: ``"mean"`` over the labelled pixels of the batch (0 when none is labelled), ``"sum"``, or
            ``"none"`` (a ``B [spatial]`` map, 0 at unlabelled pixels).
        class_weights: optional per-class weights, length ``C``.
    """

    def __init__(
        self, reduction: LossReduction | str = LossReduction.MEAN, class_weights: torch.Tensor | None = None
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits ``B C [spatial]``.
            target: class ids ``B [spatial]`` or ``B 1 [spatial]``, ``0`` = unlabelled, ``1..C``.

        Raises:
            ValueError: when the shapes do not match or an id is outside ``0..C``.
        """
        if target.ndim == input.ndim:
            if target.shape[1] != 1:
                raise ValueError(f"target must be B[spatial] or B1[spatial], got {tuple(target.shape)}.")
            target = target[:, 0]
        if input.ndim < 3 or target.shape != (input.shape[0], *input.shape[2:]):
            raise ValueError(
                f"Expected logits B C [spatial] and labels B [spatial], got {tuple(input.shape)} and "
                f"{tuple(target.shape)}."
            )
        target = target.long()
        if target.numel() and (int(target.min()) < 0 or int(target.max()) > input.shape[1]):
            raise ValueError(
                f"labels must be in 0..{input.shape[1]} (0 = unlabelled), got {int(target.min())}..{int(target.max())}."
            )
        weight = None if self.class_weights is None else self.class_weights.to(input.device)
        per_pixel = F.cross_entropy(
            input.float(), target - 1, weight=weight, ignore_index=UNLABELLED - 1, reduction="none"
        )
        if self.reduction == LossReduction.NONE.value:
            return per_pixel
        if self.reduction == LossReduction.SUM.value:
            return per_pixel.sum()
        labelled = target != UNLABELLED
        if weight is None:
            norm = labelled.sum().to(per_pixel.dtype)
        else:
            norm = weight[target[labelled] - 1].sum()
        return per_pixel.sum() / norm.clamp(min=1e-12)
