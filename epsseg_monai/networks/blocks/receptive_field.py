"""Receptive-field radius of a stride-1 stack of convolutions (tiling halos and centre crops)."""

from __future__ import annotations

from torch import nn

from .blur_pool import BlurPool

__all__ = ["receptive_field_radius"]


def receptive_field_radius(module: nn.Module) -> int:
    """Receptive-field radius (in input voxels) of a feed-forward stack of convolutions at stride 1.

    Sums ``dilation * (kernel - 1) // 2`` over the convolutions of ``module`` (and 1 per
    :class:`BlurPool`), which is exact for sequential stacks and residual blocks; stride-2 layers are
    accounted for by the caller.
    """
    radius = 0
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            radius += max((k - 1) // 2 * d for k, d in zip(m.kernel_size, m.dilation))
        elif isinstance(m, BlurPool):
            radius += 1
    return radius
