"""Inpainting loss: reconstruction error on the masked centre region only."""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from epsseg_monai.utils import center_region_mask, center_region_slices

__all__ = ["InpaintingLoss"]


class InpaintingLoss(_Loss):
    """``0.5 * (reconstruction - target)**2`` averaged over the masked centre region of each sample.

    This is the negative log-likelihood (up to a constant) of a fixed unit-variance Gaussian, restricted
    to the region the network could not see. Voxels outside the region do not affect the loss.

    The reconstruction may be a centre crop of the patch (``EpsSegHVAE(reconstruct_center=...)``): ``target``
    and ``mask`` are then cropped to its centre, which must still hold the whole masked region.

    Args:
        mask_size: side of the centre region (see :class:`~epsseg_monai.transforms.CenterRegionMask`);
            used when ``forward`` gets no explicit ``mask``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-sample losses, shape ``(B,)``) over the batch.
    """

    def __init__(self, mask_size: int = 1, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if mask_size < 1:
            raise ValueError(f"mask_size must be >= 1, got {mask_size}.")
        self.mask_size = int(mask_size)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            input: reconstruction, shape BCH[WD]: the whole patch or a centre crop of it.
            target: the unmasked image, shape BCH[WD] of the whole patch.
            mask: optional boolean region, broadcastable to ``target`` with a batch dimension of 1 or B
                (e.g. B1H[WD]); default: the centre region of side ``mask_size``.

        Raises:
            ValueError: when shapes do not match, the region is empty for some sample, or it reaches outside
                a cropped reconstruction.
        """
        if input.ndim < 3:
            raise ValueError(f"Expected BCH[WD] tensors, got shape {tuple(input.shape)}.")
        if (
            input.shape[:2] != target.shape[:2]
            or input.ndim != target.ndim
            or any(i > t or (t - i) % 2 for i, t in zip(input.shape[2:], target.shape[2:]))
        ):
            raise ValueError(
                f"input must have the shape of target or of a centre crop of it, got {tuple(input.shape)} and "
                f"{tuple(target.shape)}."
            )
        if mask is None:
            mask = center_region_mask(target.shape[2:], self.mask_size, device=input.device)[None, None]
        else:
            if (
                mask.ndim != target.ndim
                or mask.shape[0] not in (1, target.shape[0])
                or mask.shape[2:] != target.shape[2:]
            ):
                raise ValueError(
                    f"mask of shape {tuple(mask.shape)} does not match target of shape {tuple(target.shape)}; "
                    "expected B1H[WD] or 11H[WD]."
                )
            mask = mask.to(device=input.device, dtype=torch.bool)
        if input.shape[2:] != target.shape[2:]:
            crop = (slice(None), slice(None)) + center_region_slices(target.shape[2:], input.shape[2:])
            if int(mask[crop].sum()) != int(mask.sum()):
                raise ValueError(
                    f"The inpainting mask reaches outside the reconstructed centre region {tuple(input.shape[2:])}; "
                    "set the network's reconstruct_center to at least the mask's side (or None)."
                )
            target, mask = target[crop], mask[crop]
        weight = mask.expand_as(input).to(input.dtype)
        count = weight.flatten(1).sum(1)
        if bool((count == 0).any()):
            raise ValueError("The inpainting mask is empty for at least one sample.")
        per_sample = (0.5 * (input - target) ** 2 * weight).flatten(1).sum(1) / count
        if self.reduction == LossReduction.MEAN.value:
            return per_sample.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_sample.sum()
        return per_sample
