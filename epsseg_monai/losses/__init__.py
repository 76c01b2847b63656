"""ε-Seg losses: inpainting, GMM-prior KL, sparse contrastive, their combination with cross-entropy, pseudo-labels."""

from __future__ import annotations

from .contrastive_loss import SparseContrastiveLoss, pairwise_distances
from .dense_ce_loss import DenseSparseCrossEntropyLoss
from .eps_seg_loss import EpsSegLoss, EpsSegTrainerLoss, SemiSupervisedEpsSegLoss, sparse_cross_entropy
from .inpainting_loss import InpaintingLoss
from .kl_loss import GMMKLDivergenceLoss
from .pseudo_labels import PseudoLabeller, class_mean_pseudo_labels

__all__ = [
    "DenseSparseCrossEntropyLoss",
    "EpsSegLoss",
    "EpsSegTrainerLoss",
    "GMMKLDivergenceLoss",
    "InpaintingLoss",
    "PseudoLabeller",
    "SemiSupervisedEpsSegLoss",
    "SparseContrastiveLoss",
    "class_mean_pseudo_labels",
    "pairwise_distances",
    "sparse_cross_entropy",
]
