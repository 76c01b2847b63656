"""ε-Seg networks: the ladder VAE, its GMM prior and its segmentation head."""

from __future__ import annotations

from .blocks import BlurPool, GatedResidualBlock, GMMPrior, SegmentationHead, gaussian_kl, receptive_field_radius
from .nets import EpsSegHVAE

__all__ = [
    "BlurPool",
    "EpsSegHVAE",
    "GMMPrior",
    "GatedResidualBlock",
    "SegmentationHead",
    "gaussian_kl",
    "receptive_field_radius",
]
