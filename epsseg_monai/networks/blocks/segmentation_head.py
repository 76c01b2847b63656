"""Segmentation head: an MLP on the centre window of the top-level posterior means."""

from __future__ import annotations

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

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: latent channels ``Z``.
        num_classes: number of classes ``C``.
        window: side of the centre window of the latent map the head reads.
        hidden_channels: width of the hidden layer (32 in the reference).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, num_classes: int, window: int = 8, hidden_channels: int = 32
    ) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}.")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.window = window
        self.net = nn.Sequential(
            conv(in_channels, in_channels, kernel_size=1),
            nn.ReLU(),
            conv(in_channels, hidden_channels, kernel_size=window),
            nn.ReLU(),
            conv(hidden_channels, num_classes, kernel_size=1),
        )

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)`` of the centre pixel from latent means ``mu`` of shape BZ[spatial].

        Raises:
            ValueError: when the latent map is smaller than ``window``.
        """
        if mu.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"Expected a BZ[spatial] tensor with {self.spatial_dims} spatial dims, got {tuple(mu.shape)}."
            )
        if min(mu.shape[2:]) < self.window:
            raise ValueError(f"Latent map {tuple(mu.shape[2:])} is smaller than the head window {self.window}.")
        window = mu[(slice(None), slice(None)) + center_region_slices(mu.shape[2:], self.window)]
        return self.net(window).flatten(1)

    def forward_dense(self, mu: torch.Tensor) -> torch.Tensor:
        """Slide the head over every ``window``-sized window of ``mu``: logits map ``BC[spatial - window + 1]``."""
        return self.net(mu)
