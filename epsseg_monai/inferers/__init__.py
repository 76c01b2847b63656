"""ε-Seg inferers: the reference per-pixel patch mode."""

from __future__ import annotations

from .patch_center import PatchCenterInferer

__all__ = ["PatchCenterInferer"]
