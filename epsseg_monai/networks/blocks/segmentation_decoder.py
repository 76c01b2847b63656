"""ε-Seg+'s segmentation decoder: per-pixel class logits from the top latent means and the bottom-up features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from epsseg_monai.networks.blocks.residual import GatedResidualBlock

__all__ = ["SegmentationDecoder"]


class SegmentationDecoder(nn.Module):
    """A U-Net-style decoder over the ladder VAE's encoder (ε-Seg+, not in the paper).

    The paper's :class:`~epsseg_monai.networks.blocks.SegmentationHead` reads a window of the top latent map,
    ``2**num_levels`` times coarser than the image, and one forward pass trains it on one labelled pixel. This
    decoder instead upsamples the top-level posterior means back to full resolution, level by level, fusing at
    each level the bottom-up features of the same resolution (skip connections), and ends with a 1x1 convolution
    to the class logits of every pixel: the cross-entropy is computed at every labelled pixel of a crop in one
    pass and boundaries are resolved at full resolution. The latent space stays the one the GMM prior, the KL and
    the contrastive loss shape; the decoder reads it as a U-Net's bottleneck.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        latent_channels: channels of the top latent means.
        num_filters: channels of the bottom-up features and of the decoder.
        num_levels: number of down-sampling levels of the encoder (the decoder upsamples as many times).
        num_classes: number of classes (output channels).
        num_blocks: gated residual blocks after each fusion.
        act: activation of the residual blocks.
        norm: normalisation of the residual blocks or ``None``.
        dropout: dropout probability of the residual blocks.
    """

    def __init__(
        self,
        spatial_dims: int,
        latent_channels: int,
        num_filters: int,
        num_levels: int,
        num_classes: int,
        num_blocks: int = 1,
        act: str = "elu",
        norm: str | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        upconv = Conv[Conv.CONVTRANS, spatial_dims]
        self.num_levels = num_levels
        self.from_top = conv(latent_channels + num_filters, num_filters, kernel_size=3, padding=1)
        self.up = nn.ModuleList(upconv(num_filters, num_filters, kernel_size=2, stride=2) for _ in range(num_levels))
        self.fuse = nn.ModuleList(
            nn.Sequential(
                conv(2 * num_filters, num_filters, kernel_size=1),
                *(
                    GatedResidualBlock(spatial_dims, num_filters, act=act, norm=norm, dropout=dropout)
                    for _ in range(num_blocks)
                ),
            )
            for _ in range(num_levels)
        )
        self.out = conv(num_filters, num_classes, kernel_size=1)

    def forward(self, mu: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits ``B C [spatial]`` at the resolution of ``features[0]``.

        Args:
            mu: top-level posterior means ``B Z [spatial / 2**num_levels]``.
            features: the encoder's features from full resolution down to the top: the stem's output, then each
                bottom-up level's (``num_levels + 1`` maps, resolution ``1 / 2**l``; see
                :meth:`EpsSegHVAE.bottom_up_pass <epsseg_monai.networks.EpsSegHVAE.bottom_up_pass>` with
                ``with_stem=True``).
        """
        if len(features) != self.num_levels + 1:
            raise ValueError(f"Expected {self.num_levels + 1} feature maps (stem and each level), got {len(features)}.")
        if mu.shape[2:] != features[-1].shape[2:]:
            raise ValueError(
                f"The latent means {tuple(mu.shape)} must have the spatial size of the top features "
                f"{tuple(features[-1].shape)}."
            )
        h = self.from_top(torch.cat([mu, features[-1]], dim=1))
        for level in reversed(range(self.num_levels)):
            h = self.fuse[level](torch.cat([self.up[level](h), features[level]], dim=1))
        return self.out(h)
