"""The reference prediction mode of ε-Seg: one network pass per output pixel, on the patch centred on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monai.utils import ensure_tuple_rep

from ..utils import center_index, check_amp, use_bfloat16

__all__ = ["PatchCenterInferer"]


class PatchCenterInferer(Inferer):
    """Predict pixels by classifying the patch centred on each of them, in batches (ε-Seg's reference mode).

    For every output pixel the network (in eval mode, returning ``(B, C)`` logits for a batch of patches)
    sees the ``patch_size`` patch whose centre voxel (index ``size // 2``) is that pixel; the image is padded
    once with ``pad_mode`` (``reflect``), exactly as the training sampler pads border patches. This costs one
    forward pass per pixel, so it is meant for validation on labelled points, spot checks and as the
    reference of faster inferers.

    Which pixels are predicted: those of ``mask`` when given to ``__call__`` (e.g. the labelled points of
    a validation image), else a seeded random subset of ``num_pixels`` per image when set, else all pixels.
    Pixels not predicted get probability 0 in every class.

    Args:
        patch_size: spatial size of the patches the network was trained on.
        batch_size: patches per forward pass.
        pad_mode: ``np.pad`` mode past the image border.
        num_pixels: predict only this many random pixels per image (``None``: all).
        seed: seed of the random subset.
        progress: show a ``tqdm`` progress bar.
        amp: run the network in bfloat16 (``torch.autocast``; probabilities stay float32): ``True``,
            ``False`` or ``"auto"`` (bfloat16 where the device computes it natively, see
            :func:`~epsseg_monai.utils.fast_bfloat16`), as :class:`~epsseg_monai.inferers.DenseInferer`.
    """

    def __init__(
        self,
        patch_size: Sequence[int] | int,
        batch_size: int = 256,
        pad_mode: str = "reflect",
        num_pixels: int | None = None,
        seed: int = 0,
        progress: bool = False,
        amp: bool | str = False,
    ) -> None:
        super().__init__()
        check_amp(amp)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.pad_mode = pad_mode
        self.num_pixels = num_pixels
        self.seed = seed
        self.progress = progress
        self.amp = amp

    def predict_points(
        self, image: torch.Tensor, network: Callable[..., torch.Tensor], coords: torch.Tensor | np.ndarray
    ) -> torch.Tensor:
        """Class probabilities of the pixels ``coords`` of one image.

        Args:
            image: channel-first image ``C[spatial]``.
            network: maps ``(B, C, *patch_size)`` patches to ``(B, K)`` logits.
            coords: ``(N, spatial_dims)`` integer pixel coordinates.

        Returns:
            ``(N, K)`` softmax probabilities.
        """
        dims = image.ndim - 1
        patch = ensure_tuple_rep(self.patch_size, dims)
        coords = torch.as_tensor(np.asarray(coords), dtype=torch.long).reshape(-1, dims)
        pads = [(0, 0)] + [(center_index(p), p - 1 - center_index(p)) for p in patch]
        padded = torch.as_tensor(np.pad(image.detach().cpu().numpy(), pads, mode=self.pad_mode))
        padded = padded.to(image.device)
        offsets = [torch.arange(p, device=image.device) for p in patch]
        outputs = []
        amp = use_bfloat16(self.amp, image.device)
        batches = range(0, len(coords), self.batch_size)
        if self.progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="patch-centre inference", unit="batch")
        for start in batches:
            c = coords[start : start + self.batch_size].to(image.device)
            # index grid (N, *patch) per axis: patch of centre c starts at c in the padded image
            index = []
            for axis in range(dims):
                shape = [1] * (dims + 1)
                shape[axis + 1] = patch[axis]
                index.append(c[:, axis].view(-1, *[1] * dims) + offsets[axis].view(shape))
            patches = padded[(slice(None), *index)].movedim(0, 1)  # (N, C, *patch)
            with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = network(patches.contiguous())
            if isinstance(logits, dict) or logits.ndim != 2:
                raise ValueError(
                    "PatchCenterInferer needs a network returning (B, num_classes) logits; put it in eval mode."
                )
            outputs.append(torch.softmax(logits.float(), dim=1))
        if not outputs:
            return image.new_zeros((0, 0))
        return torch.cat(outputs)

    def _coords(self, mask: torch.Tensor | None, spatial: Sequence[int], index: int) -> torch.Tensor:
        if mask is not None:
            m = mask[index]
            m = m[0] if m.ndim == len(spatial) + 1 else m
            if tuple(m.shape) != tuple(spatial):
                raise ValueError(f"mask shape {tuple(m.shape)} does not match the image's {tuple(spatial)}.")
            return torch.nonzero(m.bool()).cpu()
        total = int(np.prod(spatial))
        if self.num_pixels is None or self.num_pixels >= total:
            return torch.nonzero(torch.ones(tuple(spatial), dtype=torch.bool))
        rng = np.random.default_rng(self.seed + index)
        flat = np.sort(rng.choice(total, size=self.num_pixels, replace=False))
        return torch.as_tensor(np.stack(np.unravel_index(flat, tuple(spatial)), axis=1))

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Callable[..., torch.Tensor],
        *args: Any,
        mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Per-pixel class probabilities ``(B, K, *spatial)`` of a batch of images ``(B, C, *spatial)``.

        Args:
            inputs: batch of channel-first images.
            network: the trained model in eval mode.
            args: unused (``Inferer`` interface).
            mask: optional ``(B[, 1], *spatial)`` boolean map of the pixels to predict.
            kwargs: unused (``Inferer`` interface).
        """
        spatial = tuple(inputs.shape[2:])
        results = None
        for b in range(inputs.shape[0]):
            coords = self._coords(mask, spatial, b)
            probs = self.predict_points(inputs[b], network, coords)
            if results is None:
                if probs.numel() == 0:  # nothing predicted in this image: need K from a dummy pass
                    probs0 = self.predict_points(inputs[b], network, torch.zeros((1, len(spatial)), dtype=torch.long))
                    k = probs0.shape[1]
                else:
                    k = probs.shape[1]
                results = inputs.new_zeros((inputs.shape[0], k, *spatial), dtype=torch.float32)
            if probs.numel():
                results[(b, slice(None), *coords.to(inputs.device).T)] = probs.T.to(results.dtype)
        assert results is not None
        return results
