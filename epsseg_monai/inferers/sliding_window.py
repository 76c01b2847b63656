"""ε-Seg's exact dense prediction through MONAI's own sliding-window machinery.

:class:`~epsseg_monai.inferers.DenseInferer` tiles the network's dense pass itself. For users who assemble MONAI
pipelines around :func:`monai.inferers.sliding_window_inference` (windows on other devices, buffered windows,
progress, huge images), :class:`DenseSlidingWindowInferer` runs the same computation inside it and gives the
same result:

* the image is padded by the extent of a training patch around its centre pixel (``reflect``, as
  ``DenseInferer``), and each window gets the network's *valid* pass (no padding of its own);
* windows overlap by twice the receptive field (``overlap = 2 * halo / roi_size`` per axis), so every pixel lies
  at least one receptive field away from the border of some window, or in a window whose border is the image
  border; only those pixels of a window, whose logits equal the untiled pass, count;
* MONAI blends the windows with constant weights; the predictor returns ``(logits * exact, exact)`` (coordinates
  from ``with_coord=True``), and their ratio is the mean over the windows where the pixel is exact, the same
  number in each (floating-point rounding aside).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer, sliding_window_inference
from monai.utils import ensure_tuple_rep
from torch import nn

from epsseg_monai.networks.nets.eps_seg_hvae import pad_border
from epsseg_monai.utils import unwrap_network

__all__ = ["DenseSlidingWindowInferer"]


class DenseSlidingWindowInferer(Inferer):
    """Per-pixel class probabilities of an ε-Seg network through :func:`monai.inferers.sliding_window_inference`.

    Equal to :class:`~epsseg_monai.inferers.DenseInferer` (same padding, same logits; module docstring).

    Args:
        roi_size: window side (int or one per spatial axis); must exceed twice the network's receptive field
            (:meth:`EpsSegHVAE.dense_receptive_field <epsseg_monai.networks.EpsSegHVAE.dense_receptive_field>`,
            about 100-200 px) and is clipped to the padded image.
        sw_batch_size: windows per network call.
        pad_mode: image border padding (``torch.nn.functional.pad`` mode), ``reflect`` as ``DenseInferer``.
        patch_size: training patch size defining each pixel's context (``None``: the network's).
        pads: ``(before, after)`` per spatial axis and ``receptive_field``: needed only for a network that does not
            carry them (a TorchScript export of :class:`~epsseg_monai.networks.DensePredictor` with
            ``pad_mode=None``, which computes the valid pass); read from an ``EpsSegHVAE`` or ``DensePredictor``.
        receptive_field: see ``pads``.
        progress: MONAI's progress bar over the windows.
        sw_device: device of the windows and the network; ``device``: device of the blended output
            (``None``: the input's), as in :class:`monai.inferers.SlidingWindowInferer`.
        device: see ``sw_device``.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sw_batch_size: int = 1,
        pad_mode: str = "reflect",
        patch_size: Sequence[int] | int | None = None,
        pads: Sequence[Sequence[int]] | None = None,
        receptive_field: int | None = None,
        progress: bool = False,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if (pads is None) != (receptive_field is None):
            raise ValueError("Give both pads and receptive_field (for a network that does not carry them) or neither.")
        self.roi_size = roi_size
        self.sw_batch_size = sw_batch_size
        self.pad_mode = pad_mode
        self.patch_size = patch_size
        self.pads = None if pads is None else [tuple(int(v) for v in p) for p in pads]
        self.halo = receptive_field
        self.progress = progress
        self.sw_device = sw_device
        self.device = device

    def geometry(self, network: Any) -> tuple[list[tuple[int, ...]], int, Callable[[torch.Tensor], torch.Tensor]]:
        """``(pads, receptive field, valid pass)`` of ``network``."""
        net = unwrap_network(network)
        if self.pads is not None:
            return self.pads, int(self.halo), net  # type: ignore[arg-type]
        if hasattr(net, "forward_dense"):  # EpsSegHVAE
            pads = [tuple(p) for p in net.dense_padding(self.patch_size)]
            halo = int(net.dense_receptive_field(self.patch_size))

            def valid(x: torch.Tensor) -> torch.Tensor:
                return net.forward_dense(x, pad_mode=None, patch_size=self.patch_size)

            return pads, halo, valid
        if hasattr(net, "receptive_field") and hasattr(net, "pads"):  # DensePredictor
            if net.pad_mode is not None:
                raise ValueError("Build the DensePredictor with pad_mode=None (the valid pass) for this inferer.")
            return [tuple(p) for p in net.pads], int(net.receptive_field), net
        raise TypeError(
            f"{type(network).__name__} carries no dense geometry: pass an EpsSegHVAE, a DensePredictor, or give "
            "pads and receptive_field for an exported valid-pass predictor."
        )

    def logits(self, inputs: torch.Tensor, network: Any) -> torch.Tensor:
        """Class logits ``(B, K, *spatial)`` of every pixel of ``inputs`` ``(B, C, *spatial)``."""
        pads, halo, valid = self.geometry(network)
        dims = len(pads)
        if inputs.ndim != dims + 2:
            raise ValueError(f"Expected (B, C, {', '.join(['*'] * dims)}) inputs, got shape {tuple(inputs.shape)}.")
        padded = pad_border(inputs.float(), pads, self.pad_mode)  # as the dense pass pads
        sizes = tuple(padded.shape[2:])
        roi = tuple(min(r, n) for r, n in zip(ensure_tuple_rep(self.roi_size, dims), sizes))
        for r, n, (before, after) in zip(roi, sizes, pads):
            if r < n and r <= 2 * halo:
                raise ValueError(
                    f"roi_size {r} must exceed twice the receptive field ({2 * halo} px) so that windows have an "
                    "exact interior; use a larger roi_size."
                )
            if r <= before + after:
                raise ValueError(f"roi_size {r} leaves no output pixel after the padding {before + after}.")
        overlap = [min(2 * halo / r, 0.99) if r < n else 0.0 for r, n in zip(roi, sizes)]

        def predictor(win: torch.Tensor, coords: Sequence[Sequence[slice]]) -> tuple[torch.Tensor, torch.Tensor]:
            out = valid(win)
            logits = out.new_zeros((win.shape[0], out.shape[1], *win.shape[2:]))
            exact = out.new_zeros((win.shape[0], 1, *win.shape[2:]))
            for b, where in enumerate(coords):
                local, source = [], []
                for sl, n, r, (before, after) in zip(where[2:], sizes, roi, pads):
                    start = sl.start or 0
                    lo = before if start == 0 else max(halo, before)
                    hi = r - after if start + r >= n else r - max(halo, after)
                    if hi <= lo:
                        break
                    local.append(slice(lo, hi))
                    source.append(slice(lo - before, hi - before))
                else:
                    logits[(b, slice(None), *local)] = out[(b, slice(None), *source)].to(logits.dtype)
                    exact[(b, slice(None), *local)] = 1.0
            return logits, exact

        net = unwrap_network(network)
        was_training = bool(getattr(net, "training", False))
        if isinstance(net, nn.Module):
            net.eval()
        try:
            with torch.no_grad():
                weighted, exact = sliding_window_inference(
                    padded,
                    roi,
                    self.sw_batch_size,
                    predictor,
                    overlap=overlap,
                    mode="constant",
                    progress=self.progress,
                    sw_device=self.sw_device,
                    device=self.device,
                    with_coord=True,
                )
        finally:
            if isinstance(net, nn.Module):
                net.train(was_training)
        crop = (slice(None), slice(None), *(slice(b, b + s) for (b, _), s in zip(pads, inputs.shape[2:])))
        weighted, exact = weighted[crop], exact[crop]
        if bool((exact <= 0).any()):
            raise RuntimeError("Some pixels lie in no window's exact interior; this is a bug in the window overlap.")
        return weighted / exact

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Per-pixel class probabilities ``(B, K, *spatial)`` (softmax of :meth:`logits`)."""
        return torch.softmax(self.logits(inputs, network), dim=1)
