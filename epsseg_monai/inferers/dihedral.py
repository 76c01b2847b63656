"""Test-time augmentation over the 8 rotations and flips of the image plane.

ε-Seg trains on patches rotated by multiples of 90 degrees and mirrored, so the network has seen every
orientation of a structure; averaging its predictions over the 8 symmetries of the square (the dihedral
group D4) removes the orientation-dependent part of its errors. It costs 8 predictions per image. In 3D
the rotations and flips act on the last two spatial axes (the section plane of anisotropic EM stacks).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["DihedralInferer", "dihedral_transforms"]


def dihedral_transforms() -> list[tuple[int, bool]]:
    """The 8 elements of D4 as ``(quarter turns, mirror)`` pairs; the identity ``(0, False)`` comes first."""
    return [(k, flip) for k in range(4) for flip in (False, True)]


def _forward(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def _inverse(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = y.flip(-1) if flip else y
    return torch.rot90(y, -k, dims=(-2, -1))


class DihedralInferer(Inferer):
    """Average the class probabilities of ``inferer`` over the 8 rotations and flips of the last two axes.

    Each transformed image is predicted by ``inferer`` (e.g. :class:`~epsseg_monai.inferers.DenseInferer`),
    the prediction is transformed back and the 8 results are averaged. The wrapped inferer must return
    per-pixel maps ``B C [spatial]`` of the input's spatial shape and predict every pixel (not a random
    subset, whose pixels would differ between orientations).

    Args:
        inferer: the inferer that predicts one orientation.
    """

    def __init__(self, inferer: Inferer) -> None:
        super().__init__()
        self.inferer = inferer

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Mean of ``inferer`` over the 8 orientations of ``inputs`` (shape ``B C [spatial]``, 2 or 3 spatial axes)."""
        if inputs.ndim < 4:
            raise ValueError(
                f"Expected inputs B C [spatial] with 2 or 3 spatial axes, got shape {tuple(inputs.shape)}."
            )
        total: torch.Tensor | None = None
        predicted: torch.Tensor | None = None
        for k, flip in dihedral_transforms():
            x = _forward(inputs, k, flip)
            out = self.inferer(x, network, *args, **kwargs)
            if not isinstance(out, torch.Tensor) or out.shape[2:] != x.shape[2:]:
                raise ValueError(
                    f"{type(self.inferer).__name__} must return per-pixel maps B C [spatial] of the input's "
                    "spatial shape to be averaged over orientations."
                )
            out = _inverse(out, k, flip).float()
            done = (out != 0).any(1)
            if total is None:
                total, predicted = out.clone(), done
            else:
                if not torch.equal(done, predicted):
                    raise ValueError(
                        f"{type(self.inferer).__name__} predicted different pixels in different orientations "
                        "(a random subset such as num_pixels); test-time augmentation needs every pixel predicted."
                    )
                total += out
        return total / len(dihedral_transforms())
