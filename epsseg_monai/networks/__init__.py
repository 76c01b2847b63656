"""ε-Seg networks: the ladder VAE, its GMM prior and its segmentation head."""

from __future__ import annotations

from .blocks import (
    BlurPool,
    GatedResidualBlock,
    GMMPrior,
    SegmentationDecoder,
    SegmentationHead,
    gaussian_kl,
    receptive_field_radius,
)
from .nets import DensePredictor, EpsSegHVAE
from .network_config import NETWORK_FILE, load_network_config, save_network_config

__all__ = [
    "NETWORK_FILE",
    "BlurPool",
    "DensePredictor",
    "EpsSegHVAE",
    "GMMPrior",
    "GatedResidualBlock",
    "SegmentationDecoder",
    "SegmentationHead",
    "gaussian_kl",
    "load_network_config",
    "receptive_field_radius",
    "save_network_config",
]
