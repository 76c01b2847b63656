"""Gated residual block of the ladder VAE (after Hierarchical DivNoising)."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Act, Conv, Dropout, Norm
from torch import nn

__all__ = ["GateLayer", "GatedResidualBlock"]


class GateLayer(nn.Module):
    """A 1x1 convolution doubles the channels; one half, through a sigmoid, gates the other (activated) half.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: number of input (= output) channels.
        act: activation applied to the gated half.
    """

    def __init__(self, spatial_dims: int, channels: int, act: str | tuple = "elu") -> None:
        super().__init__()
        self.conv = Conv[Conv.CONV, spatial_dims](channels, 2 * channels, kernel_size=1)
        self.act = Act[act]() if isinstance(act, str) else Act[act[0]](**act[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = torch.chunk(self.conv(x), 2, dim=1)
        return self.act(value) * torch.sigmoid(gate)


class GatedResidualBlock(nn.Module):
    """``x + gate(f(x))`` with ``f`` = 2 x (BatchNorm, activation, 3x3 conv, dropout).

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        channels: number of input (= output) channels.
        kernel_size: odd kernel size of the two convolutions.
        act: activation name (MONAI ``Act`` factory), ELU by default.
        norm: normalisation name (MONAI ``Norm`` factory) or ``None``; batch norm by default.
        dropout: channel-dropout probability after each convolution (0 disables it).
        gated: end the residual branch with a :class:`GateLayer`.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        kernel_size: int = 3,
        act: str = "elu",
        norm: str | None = "batch",
        dropout: float = 0.0,
        gated: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
        layers: list[nn.Module] = []
        for _ in range(2):
            if norm is not None:
                layers.append(Norm[norm, spatial_dims](channels))
            layers.append(Act[act]())
            layers.append(Conv[Conv.CONV, spatial_dims](channels, channels, kernel_size, padding=kernel_size // 2))
            if dropout > 0:
                layers.append(Dropout[Dropout.DROPOUT, spatial_dims](dropout))
        if gated:
            layers.append(GateLayer(spatial_dims, channels, act))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)
