"""ε-Seg inferers: the reference per-pixel patch mode and the fast dense mode."""

from __future__ import annotations

from .dense import DenseInferer, class_entropy, receptive_field_radius
from .patch_center import PatchCenterInferer

__all__ = ["DenseInferer", "PatchCenterInferer", "class_entropy", "receptive_field_radius"]
