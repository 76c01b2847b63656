"""Segmentation head: an MLP on the centre window of the top-level posterior means (and, in ε-Seg+, on the
finer levels' features at the centre pixel)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from epsseg_monai.utils import center_region_slices

__all__ = ["SegmentationHead"]


class SegmentationHead(nn.Module):
    """Predict the class of a patch's centre pixel from the top latent level's posterior means.

    Reference architecture: on the centre ``window``-sized window of ``mu``: 1x1 conv ``Z -> Z`` + ReLU,
    flatten, Linear ``-> hidden`` + ReLU, Linear ``-> C``. The Linear layer on the flattened window is
    implemented as a convolution with kernel ``window`` (the same function, the same parameter count),
    which lets :meth:`forward_dense` slide the head over a whole latent map at no extra cost.

    Fine-detail head (ε-Seg+, ``fine_channels`` not empty): the top window is 8x coarser than the image, so the
    head also reads one feature vector per finer level at the centre pixel (for example the stem's and the first
    bottom-up levels' features, see :class:`~epsseg_monai.networks.EpsSegHVAE`'s ``head_fine_levels``). Each
    goes through its own linear map (a 1x1 convolution) to ``hidden_channels`` and is added to the window's
    hidden pre-activation: ``hidden = ReLU(W_window * window + sum_l W_l f_l)``. With no fine features the head
    is the reference one, with the same parameter names.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: latent channels ``Z``.
        num_classes: number of classes ``C``.
        window: side of the centre window of the latent map the head reads.
        hidden_channels: width of the hidden layer (32 in the reference).
        fine_channels: channels of each fine-detail feature vector the head also reads (empty: reference head).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        window: int = 8,
        hidden_channels: int = 32,
        fine_channels: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}.")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.window = window
        self.num_classes = num_classes
        self.net = nn.Sequential(
            conv(in_channels, in_channels, kernel_size=1),
            nn.ReLU(),
            conv(in_channels, hidden_channels, kernel_size=window),
            nn.ReLU(),
            conv(hidden_channels, num_classes, kernel_size=1),
        )
        self.fine = nn.ModuleList(conv(c, hidden_channels, kernel_size=1, bias=False) for c in fine_channels)

    def _check_fine(self, fine: Sequence[torch.Tensor] | None) -> Sequence[torch.Tensor]:
        fine = () if fine is None else fine
        if len(fine) != len(self.fine):
            raise ValueError(f"The head reads {len(self.fine)} fine-detail feature maps, got {len(fine)}.")
        return fine

    def _combine(self, window_hidden: torch.Tensor, fine: Sequence[torch.Tensor]) -> torch.Tensor:
        h = window_hidden
        for proj, f in zip(self.fine, fine):
            h = h + proj(f)
        return self.net[4](self.net[3](h))

    def forward(self, mu: torch.Tensor, fine: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Class logits ``(B, C)`` of the centre pixel from latent means ``mu`` of shape BZ[spatial].

        Args:
            mu: top-level posterior means.
            fine: with fine-detail inputs, one feature map per level of shape ``B ch [1]*spatial_dims`` (the
                features at the centre pixel), in the order of ``fine_channels``.

        Raises:
            ValueError: when the latent map is smaller than ``window`` or the fine inputs do not match.
        """
        if mu.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"Expected a BZ[spatial] tensor with {self.spatial_dims} spatial dims, got {tuple(mu.shape)}."
            )
        if min(mu.shape[2:]) < self.window:
            raise ValueError(f"Latent map {tuple(mu.shape[2:])} is smaller than the head window {self.window}.")
        fine = self._check_fine(fine)
        window = mu[(slice(None), slice(None)) + center_region_slices(mu.shape[2:], self.window)]
        return self._combine(self.net[2](self.net[1](self.net[0](window))), fine).flatten(1)

    def forward_dense(self, mu: torch.Tensor, fine: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Slide the head over every ``window``-sized window of ``mu``: logits map ``BC[spatial - window + 1]``.

        Args:
            mu: top-level posterior means BZ[spatial].
            fine: with fine-detail inputs, one map per level holding, at each output position, the features at
                the centre pixel of that position's window (shape ``B ch [spatial - window + 1]``).
        """
        fine = self._check_fine(fine)
        return self._combine(self.net[2](self.net[1](self.net[0](mu))), fine)
