"""epsseg-monai: ε-Seg sparsely supervised segmentation of microscopy as MONAI components.

Subpackages: :mod:`epsseg_monai.networks` (ladder VAE, GMM prior, segmentation head),
:mod:`epsseg_monai.transforms` (masking, sparse-label patch sampling), :mod:`epsseg_monai.losses`.
Label convention everywhere: ``0`` = unlabelled, ``1..C`` = class id (napari Labels).
"""

from __future__ import annotations

__version__ = "0.1.0"
