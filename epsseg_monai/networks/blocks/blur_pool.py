"""Anti-aliased downsampling: a binomial [1, 2, 1] blur followed by stride 2 (blur-pool)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BlurPool"]


class BlurPool(nn.Module):
    """Depthwise binomial blur ([1, 2, 1] per axis, normalised) evaluated with a stride.

    Equivalent to blurring at full resolution and keeping every ``stride``-th voxel, at a ``stride**d``
    fraction of the cost.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        channels: number of input (= output) channels.
        stride: downsampling factor.
    """

    def __init__(self, spatial_dims: int, channels: int, stride: int = 2) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.stride = stride
        k1 = torch.tensor([1.0, 2.0, 1.0])
        kernel = k1
        for _ in range(spatial_dims - 1):
            kernel = kernel.unsqueeze(-1) * k1
        kernel = kernel / kernel.sum()
        self.register_buffer("kernel", kernel.expand(channels, 1, *kernel.shape).contiguous(), persistent=False)
        self._conv = (F.conv1d, F.conv2d, F.conv3d)[spatial_dims - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur and downsample ``x`` of shape BC[spatial]."""
        return self._conv(x, self.kernel, stride=self.stride, padding=1, groups=self.channels)
