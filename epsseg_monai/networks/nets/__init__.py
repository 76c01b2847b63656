"""Networks."""

from __future__ import annotations

from .eps_seg_hvae import EpsSegHVAE

__all__ = ["EpsSegHVAE"]
