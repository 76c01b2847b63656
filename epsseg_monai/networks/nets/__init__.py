"""Networks."""

from __future__ import annotations

from .dense_predictor import DensePredictor
from .eps_seg_hvae import EpsSegHVAE

__all__ = ["DensePredictor", "EpsSegHVAE"]
