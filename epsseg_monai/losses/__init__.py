"""ε-Seg losses: inpainting, GMM-prior KL, sparse contrastive, and their combination with cross-entropy."""

from __future__ import annotations

from .contrastive_loss import SparseContrastiveLoss, pairwise_distances
from .eps_seg_loss import EpsSegLoss, EpsSegTrainerLoss, sparse_cross_entropy
from .inpainting_loss import InpaintingLoss
from .kl_loss import GMMKLDivergenceLoss

__all__ = [
    "EpsSegLoss",
    "EpsSegTrainerLoss",
    "GMMKLDivergenceLoss",
    "InpaintingLoss",
    "SparseContrastiveLoss",
    "pairwise_distances",
    "sparse_cross_entropy",
]
