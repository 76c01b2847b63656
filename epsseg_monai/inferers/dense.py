"""Dense prediction of every pixel in one fully convolutional pass (ε-Seg's fast mode).

The reference mode (:class:`~epsseg_monai.inferers.PatchCenterInferer`) classifies the patch centred on each
pixel, one network pass per output pixel. Prediction needs only the bottom-up path, the top-level posterior
means and the segmentation head, all convolutional, so the class of every pixel can be computed at once:

* **Shift-and-stitch as a phase tree.** The bottom-up path halves the resolution ``L`` times (blur-pool,
  stride 2), so a plain fully convolutional pass gives logits on a grid of stride ``2**L`` only. Each
  blur-pool is instead evaluated at both offsets (phases) along each axis; every phase is an ordinary
  half-resolution map that the following blocks process unchanged, and the head's window convolution on
  the top map of each phase combination gives the logits of one of the ``2**(L*d)`` interleaved sub-grids.
  This is exactly the network with strides turned into dilations (à trous), with the same arithmetic per
  output pixel, but every convolution stays a dense, non-dilated one on a compact map, and phases are
  processed depth first, so only one half-resolution map per level is alive at a time.
* **Tiling with halos from the receptive field.** Each stage (level ``l``: its 3x3 convolution, one
  blur-pool phase and its residual blocks) is evaluated in tiles along every spatial axis. A tile is
  extended by the stage's receptive-field radius, and only positions that see no tile border are kept, so
  the result equals the untiled computation. Tiles are near-cubic and sized so that their largest map (the
  full-resolution convolution output, halo included) stays within ``max_slab_voxels``; memory is then
  bounded by the phase maps kept along the depth-first path and the output, for 2D images and 3D volumes.
* **Image borders as in the reference.** The image is padded with ``pad_mode`` (reflect) by the extent of
  a training patch around its centre voxel, like the reference pads before cutting border patches.
  Features beyond that are zero-padded by the convolutions, as at the border of a training patch.

The network is the same; what differs from the reference mode is context: a feature map cell near the
border of a 64 px training patch sees zero padding in the reference mode and real image content here.
See ``benchmarks/dense_inference.py`` for the agreement and accuracy of the two modes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.utils import ensure_tuple, ensure_tuple_rep
from torch import nn

from ..networks.blocks.blur_pool import BlurPool
from ..networks.blocks.receptive_field import receptive_field_radius
from ..utils import center_index, center_region_slices, check_amp, use_bfloat16

__all__ = ["DenseInferer", "class_entropy"]


def class_entropy(probs: torch.Tensor, dim: int = 1, normalize: bool = True) -> torch.Tensor:
    """Per-pixel entropy of class probabilities (an uncertainty map), in ``[0, 1]`` when ``normalize``.

    Args:
        probs: class probabilities, classes along ``dim``.
        dim: the class axis (kept with size 1).
        normalize: divide by ``log(num_classes)`` so a uniform prediction has entropy 1.
    """
    ent = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=dim, keepdim=True)
    if normalize and probs.shape[dim] > 1:
        ent = ent / math.log(probs.shape[dim])
    return ent


class DenseInferer(Inferer):
    """Class probabilities of every pixel of 2D images or 3D volumes from an ε-Seg network, fully convolutionally.

    The result equals running the network's prediction path (bottom-up, top posterior means, head) on the
    patch centred on each pixel, except that context beyond the training patch is real image content
    instead of the zero padding a lone patch has (module docstring). Pixel ``p``'s head reads the same
    centre window of latent cells, at the same offsets, as in the reference mode.

    Args:
        patch_size: side of the training patches (sets the image padding and the head's window offsets);
            ``None`` uses ``network.patch_size``.
        pad_mode: ``torch.nn.functional.pad`` mode for the image border (``reflect``, ``replicate``,
            ``constant``); reflect, as the training sampler and the reference inferer.
        max_slab_voxels: budget, in voxels x channels / 64, of a stage tile's largest map (its full-resolution
            convolution output, halo included); the default, ``2**20``, is 256 MiB in float32. A tile is never
            thinner than one output row plus the stage's halo. ``None`` evaluates every stage in one piece.
        progress: show a ``tqdm`` progress bar over the phase sub-grids (of every tile).
        amp: compute in bfloat16 (``torch.autocast``): 1.5-1.9x faster on CPUs with AVX-512 BF16 or AMX, with
            99.9 % of pixels keeping their float32 class on the VNC benchmark (same Dice). ``"auto"`` uses it
            where the device computes bfloat16 natively (:func:`~epsseg_monai.utils.fast_bfloat16`).
        tile_size: predict the image in tiles of this side (int or one per spatial axis), each read with a
            margin of :meth:`receptive_field` pixels, so the result equals the untiled prediction (no seams)
            while only one tile's maps are in memory. ``None`` predicts the image in one piece (stages are
            still tiled, ``max_slab_voxels``). With :meth:`predict_array` the input and output may be
            memory-mapped arrays larger than RAM.

    ``__call__`` returns ``(B, K, *spatial)`` softmax probabilities for ``(B, C, *spatial)`` inputs; the
    ``mask`` keyword of :class:`PatchCenterInferer` is accepted and ignored (every pixel is predicted).
    """

    def __init__(
        self,
        patch_size: Sequence[int] | int | None = None,
        pad_mode: str = "reflect",
        max_slab_voxels: int | None = 2**20,
        progress: bool = False,
        amp: bool | str = False,
        tile_size: Sequence[int] | int | None = None,
    ) -> None:
        super().__init__()
        if max_slab_voxels is not None and max_slab_voxels < 1:
            raise ValueError(f"max_slab_voxels must be positive or None, got {max_slab_voxels}.")
        if tile_size is not None and min(ensure_tuple(tile_size)) < 1:
            raise ValueError(f"tile_size must be positive (one int or one per spatial axis) or None, got {tile_size}.")
        check_amp(amp)
        self.tile_size = tile_size
        self.patch_size = patch_size
        self.pad_mode = pad_mode
        self.max_slab_voxels = max_slab_voxels
        self.progress = progress
        self.amp = amp

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _check_network(network: Any) -> nn.Module:
        net = getattr(network, "module", network)  # DataParallel / DDP
        needed = ("stem", "bottom_up", "top_posterior", "head", "spatial_dims")
        if not all(hasattr(net, name) for name in needed):
            raise TypeError(
                "DenseInferer needs the ε-Seg network module (epsseg_monai.networks.EpsSegHVAE or a subclass); "
                f"got {type(network).__name__}. For a TorchScript export or another network use PatchCenterInferer."
            )
        return net

    def _patch(self, net: nn.Module) -> tuple[int, ...]:
        size = net.patch_size if self.patch_size is None else self.patch_size
        return (int(size),) * net.spatial_dims if isinstance(size, int) else tuple(int(s) for s in size)

    def image_padding(self, network: nn.Module) -> list[tuple[int, int]]:
        """Padding ``(before, after)`` per spatial axis: the extent of a training patch around its centre."""
        net = self._check_network(network)
        factor = 2 ** len(net.bottom_up)
        window = net.head.window
        pads = []
        for p in self._patch(net):
            if p % factor:
                raise ValueError(f"patch_size {p} must be divisible by 2**num_levels = {factor}.")
            start = center_region_slices((p // factor,), window)[0].start  # head window in the patch's top map
            before = center_index(p) - factor * start  # centre pixel relative to the window's first cell
            after = factor * (window - 1) - before
            pads.append((before, max(after, 0)))
        return pads

    def receptive_field(self, network: nn.Module) -> int:
        """Radius in pixels of the input region one output pixel depends on (the tiling halo it implies)."""
        net = self._check_network(network)
        num_levels = len(net.bottom_up)
        radius = sum(2**level * self._stage_radius(net, level) for level in range(num_levels))
        radius += 2**num_levels * receptive_field_radius(net.top_posterior)
        before, after = max(self.image_padding(net), key=max)
        return radius + max(before, after)

    # ------------------------------------------------------------------ stages
    def _stage_radius(self, net: nn.Module, level: int) -> int:
        """Receptive-field radius of stage ``level`` in rows of its input map."""
        modules = list(net.bottom_up[level])
        radius = receptive_field_radius(modules[0]) + 1
        if level == 0:
            radius += receptive_field_radius(net.stem)
        return radius + 2 * sum(receptive_field_radius(m) for m in modules[2:])

    @staticmethod
    def _stage(net: nn.Module, level: int, x: torch.Tensor, phase: Sequence[int]) -> torch.Tensor:
        """Stage ``level`` on ``x``: [stem,] conv, the blur-pool sub-grid starting at ``phase``, blocks."""
        modules = list(net.bottom_up[level])
        if level == 0:
            x = net.stem(x)
        x = modules[0](x)
        pool: BlurPool = modules[1]
        dims = x.ndim - 2
        x = F.pad(x, (1, 1) * dims)
        x = x[(slice(None), slice(None), *(slice(p, None) for p in phase))]
        x = pool._conv(x, pool.kernel, stride=pool.stride, groups=pool.channels)
        for m in modules[2:]:
            x = m(x)
        return x

    @staticmethod
    def _phase_sizes(x: torch.Tensor, phase: Sequence[int]) -> list[int]:
        """Side lengths of the stride-2 sub-grid of ``x``'s spatial axes that starts at ``phase``."""
        return [-(-(s - p) // 2) for s, p in zip(x.shape[2:], phase)]

    def _tiles(self, net: nn.Module, level: int, x: torch.Tensor, phase: Sequence[int]) -> list[int]:
        """Output rows per tile along each axis of stage ``level``, so that a tile's largest map fits the budget.

        The largest map of a stage is its full-resolution convolution output over the tile and its halo,
        ``prod(2 * rows + 2 * halo) * width`` elements. The axis with the longest tile (halo included) is split
        first, which keeps tiles near-cubic and so the recomputed halo small relative to the tile.
        """
        out_sizes = self._phase_sizes(x, phase)
        if self.max_slab_voxels is None:
            return out_sizes
        budget = max(1, (self.max_slab_voxels * 64) // net.bottom_up[level][0].out_channels)
        halo = self._stage_radius(net, level)
        pieces = [1] * len(out_sizes)
        while True:
            rows = [-(-m // k) for m, k in zip(out_sizes, pieces)]
            extents = [min(n, 2 * r + 2 * halo + 1) for n, r in zip(x.shape[2:], rows)]
            if math.prod(extents) <= budget or max(rows) == 1:
                return rows
            axis = max((d for d, r in enumerate(rows) if r > 1), key=lambda d: extents[d])  # first on ties
            pieces[axis] += 1

    def _run_stage(self, net: nn.Module, level: int, x: torch.Tensor, phase: Sequence[int]) -> torch.Tensor:
        """:meth:`_stage` over ``x`` in tiles along every spatial axis, each with the stage's receptive-field halo.

        Only output positions whose receptive field lies inside the tile are kept, so the result equals the
        untiled computation.
        """
        rows = self._tiles(net, level, x, phase)
        out_sizes = self._phase_sizes(x, phase)
        if rows == out_sizes:
            return self._stage(net, level, x, phase)
        halo = self._stage_radius(net, level)
        halo += halo % 2
        axes = []  # per axis: (output range, input range, local phase, first kept row of the piece)
        for n, m, r, p in zip(x.shape[2:], out_sizes, rows, phase):
            spans = []
            for k0 in range(0, m, r):
                k1 = min(m, k0 + r)
                first, last = p + 2 * k0, p + 2 * (k1 - 1)
                lo, hi = max(0, first - halo), min(n, last + halo + 1)
                local = (first - lo) % 2
                spans.append((slice(k0, k1), slice(lo, hi), local, (first - lo - local) // 2))
            axes.append(spans)
        out: torch.Tensor | None = None
        for tile in itertools.product(*axes):
            piece = self._stage(net, level, x[(slice(None), slice(None), *(t[1] for t in tile))], [t[2] for t in tile])
            keep = (slice(None), slice(None), *(slice(t[3], t[3] + t[0].stop - t[0].start) for t in tile))
            piece = piece[keep]
            if out is None:
                out = piece.new_empty((piece.shape[0], piece.shape[1], *out_sizes))
            out[(slice(None), slice(None), *(t[0] for t in tile))] = piece
        assert out is not None
        return out

    def _logits(self, net: nn.Module, x: torch.Tensor, level: int, bar: Any) -> torch.Tensor:
        """Logits of every output position of ``x`` (a phase map of level ``level``), depth first over phases."""
        dims = x.ndim - 2
        num_levels = len(net.bottom_up)
        if level == num_levels:
            out = net.head.forward_dense(net.top_posterior(x)[0])
            if bar is not None:
                bar.update(1)
            return out
        span = (net.head.window - 1) * 2 ** (num_levels - level)
        sizes = [s - span for s in x.shape[2:]]
        if min(sizes) < 1:
            raise ValueError(f"Map {tuple(x.shape[2:])} is too small for the head at level {level}.")
        out: torch.Tensor | None = None
        for phase in itertools.product((0, 1), repeat=dims):
            if any(p >= size for p, size in zip(phase, sizes)):
                continue  # this sub-grid has no output position (a side of 1 at this level)
            child = self._logits(net, self._run_stage(net, level, x, phase), level + 1, bar)
            if out is None:
                out = child.new_empty((child.shape[0], child.shape[1], *sizes))
            out[(slice(None), slice(None), *(slice(p, None, 2) for p in phase))] = child
        assert out is not None
        return out

    def _padded_logits(self, net: nn.Module, inputs: torch.Tensor, bar: Any) -> torch.Tensor:
        """Logits of one image batch (or tile) in one piece: pad its border, run the phase tree (eval mode set)."""
        dims = net.spatial_dims
        pads = self.image_padding(net)
        spatial = tuple(inputs.shape[2:])
        if self.pad_mode == "reflect" and any(max(p) >= s for p, s in zip(pads, spatial)):
            pad_mode = "replicate"  # torch cannot reflect by more than the image side
        else:
            pad_mode = self.pad_mode
        flat = [v for p in reversed(pads) for v in p]
        x = F.pad(inputs.float(), flat, mode=pad_mode) if any(flat) else inputs.float()
        x = x.contiguous(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
        out = self._logits(net, x, 0, bar).float()
        return out[(slice(None), slice(None), *(slice(0, s) for s in spatial))]

    def tiles(self, network: nn.Module, spatial: Sequence[int]) -> list[tuple[tuple[slice, ...], ...]]:
        """The outer tiles of an image of shape ``spatial``: ``(read, keep, write)`` slices per spatial axis.

        ``read`` is the tile with a margin of :meth:`receptive_field` pixels (clipped to the image), ``keep``
        the tile's own pixels within the read region, ``write`` the same pixels in the image. One tile
        covering the image when ``tile_size`` is ``None`` or not smaller than the image.
        """
        net = self._check_network(network)
        if self.tile_size is None:
            whole = tuple(slice(0, n) for n in spatial)
            return [(whole, whole, whole)]
        size = ensure_tuple_rep(self.tile_size, len(spatial))
        margin = self.receptive_field(net)
        axes = []
        for n, t in zip(spatial, size):
            spans = []
            for a in range(0, n, t):
                b = min(n, a + t)
                lo, hi = (0, n) if t >= n else (max(0, a - margin), min(n, b + margin))
                spans.append((slice(lo, hi), slice(a - lo, b - lo), slice(a, b)))
            axes.append(spans)
        return [tuple(zip(*tile)) for tile in itertools.product(*axes)]  # type: ignore[misc]

    def _check_inputs(self, net: nn.Module, shape: Sequence[int]) -> None:
        dims = net.spatial_dims
        if len(shape) != dims + 2:
            raise ValueError(
                f"DenseInferer expects (B, C, {', '.join(['*'] * dims)}) inputs for a {dims}D network, "
                f"got shape {tuple(shape)}."
            )

    def _run(self, net: nn.Module, num_tiles: int, body: Callable[[Any], Any]) -> Any:
        """``body(bar)`` with the network in eval mode, channels-last, under ``no_grad`` (and autocast)."""
        dims = net.spatial_dims
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            total = num_tiles * 2 ** (dims * len(net.bottom_up))
            bar = tqdm(total=total, desc="dense inference", unit="sub-grid")
        was_training = net.training
        net.eval().to(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
        try:
            device = next(net.parameters()).device
            amp = use_bfloat16(self.amp, device)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                return body(bar)
        finally:
            net.train(was_training).to(memory_format=torch.contiguous_format)
            if bar is not None:
                bar.close()

    def logits(self, inputs: torch.Tensor, network: nn.Module) -> torch.Tensor:
        """Class logits ``(B, K, *spatial)`` of every pixel of ``inputs`` ``(B, C, *spatial)``.

        The network runs in eval mode with channels-last weights (about 1.5x faster convolutions on CPU,
        oneDNN); its mode and memory layout are restored afterwards.
        """
        net = self._check_network(network)
        self._check_inputs(net, inputs.shape)
        tiles = self.tiles(net, inputs.shape[2:])

        def body(bar: Any) -> torch.Tensor:
            if len(tiles) == 1:
                return self._padded_logits(net, inputs, bar)  # no copy into a separate output
            out: torch.Tensor | None = None
            for read, keep, write in tiles:
                piece = self._padded_logits(net, inputs[(slice(None), slice(None), *read)], bar)
                piece = piece[(slice(None), slice(None), *keep)]
                if out is None:
                    out = piece.new_empty((piece.shape[0], piece.shape[1], *inputs.shape[2:]))
                out[(slice(None), slice(None), *write)] = piece
            assert out is not None
            return out

        return self._run(net, len(tiles), body)

    def predict_array(
        self,
        image: Any,
        network: nn.Module,
        out: Any = None,
        mean: Sequence[float] | float = 0.0,
        std: Sequence[float] | float = 1.0,
    ) -> Any:
        """Class probabilities of one image ``(C, *spatial)`` read and written tile by tile (out of core).

        ``image`` is any array that supports slicing (a NumPy array or ``np.memmap``, ``tifffile.memmap``,
        a zarr or HDF5 dataset) and is read one tile (with its margin) at a time, normalised per channel as
        ``(tile - mean) / std`` (the training run's ``intensity_stats.json``); ``out``, for example
        ``numpy.lib.format.open_memmap(path, mode="w+", dtype="float32", shape=(K, *spatial))``, receives
        the ``(K, *spatial)`` probabilities tile by tile, so neither needs to fit in memory with a
        ``tile_size`` set. ``out=None`` allocates a float32 NumPy array.

        Returns:
            ``out``.
        """
        net = self._check_network(network)
        self._check_inputs(net, (1, *image.shape))
        spatial = tuple(image.shape[1:])
        num_classes = net.head.net[-1].out_channels
        if out is None:
            out = np.empty((num_classes, *spatial), dtype=np.float32)
        elif tuple(out.shape) != (num_classes, *spatial):
            expected = (num_classes, *spatial)
            raise ValueError(f"out must have shape {expected} (classes, *image), got {tuple(out.shape)}.")
        tiles = self.tiles(net, spatial)
        device = next(net.parameters()).device
        shape = (-1,) + (1,) * len(spatial)
        mean_ = np.asarray(mean, dtype=np.float32).reshape(shape)
        std_ = np.asarray(std, dtype=np.float32).reshape(shape)
        if not np.all(std_ > 0):
            raise ValueError(f"std must be positive, got {std}.")

        def body(bar: Any) -> None:
            for read, keep, write in tiles:
                tile = (np.asarray(image[(slice(None), *read)], dtype=np.float32) - mean_) / std_
                tile = torch.as_tensor(tile, device=device)
                logits = self._padded_logits(net, tile[None], bar)[(0, slice(None), *keep)]
                out[(slice(None), *write)] = torch.softmax(logits, dim=0).cpu().numpy()

        self._run(net, len(tiles), body)
        return out

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
            network: the trained :class:`~epsseg_monai.networks.EpsSegHVAE` (put in eval mode here if not).
            args: unused (``Inferer`` interface).
            mask: accepted for drop-in use where :class:`PatchCenterInferer` gets one; ignored.
            kwargs: unused (``Inferer`` interface).
        """
        return torch.softmax(self.logits(inputs, network), dim=1).contiguous()
