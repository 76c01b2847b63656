"""Building blocks of the ε-Seg ladder VAE."""

from __future__ import annotations

from .blur_pool import BlurPool
from .gmm_prior import GMMPrior, gaussian_kl, select_components
from .receptive_field import receptive_field_radius
from .residual import GatedResidualBlock, GateLayer
from .segmentation_decoder import SegmentationDecoder
from .segmentation_head import SegmentationHead

__all__ = [
    "BlurPool",
    "GMMPrior",
    "GateLayer",
    "GatedResidualBlock",
    "SegmentationDecoder",
    "SegmentationHead",
    "gaussian_kl",
    "receptive_field_radius",
    "select_components",
]
