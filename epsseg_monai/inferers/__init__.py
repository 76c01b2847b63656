"""ε-Seg inferers: the reference per-pixel patch mode, the fast dense mode, test-time augmentation, and
bfloat16 autocast for training."""

from __future__ import annotations

from ..networks.blocks.receptive_field import receptive_field_radius  # kept here too: earlier releases had it here
from .autocast import AutocastInferer
from .dense import DenseInferer, class_entropy
from .dihedral import DihedralInferer, dihedral_transforms
from .patch_center import PatchCenterInferer
from .sliding_window import DenseSlidingWindowInferer

__all__ = [
    "AutocastInferer",
    "DenseInferer",
    "DenseSlidingWindowInferer",
    "DihedralInferer",
    "PatchCenterInferer",
    "class_entropy",
    "dihedral_transforms",
    "receptive_field_radius",
]
