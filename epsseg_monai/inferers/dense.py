"""Dense prediction of every pixel of an image or volume (ε-Seg's fast mode), tiled to bound memory.

The reference mode (:class:`~epsseg_monai.inferers.PatchCenterInferer`) classifies the patch centred on each
pixel, one network pass per output pixel. The network computes the same logits for every pixel at once
(:meth:`EpsSegHVAE.forward_dense <epsseg_monai.networks.EpsSegHVAE.forward_dense>`, a phase tree, see
:mod:`epsseg_monai.networks.nets.phase_tree`); :class:`DenseInferer` is the exact tiler around it:

* **Stage tiles** (``max_slab_voxels``): each stage of the phase tree runs in tiles with its receptive-field halo,
  so the largest map stays within the budget, for 2D images and 3D volumes.
* **Image tiles** (``tile_size``, :meth:`DenseInferer.predict_array`): the image is read and predicted tile by
  tile, each with a margin of the network's receptive field, so the result equals the untiled prediction
  (no seams) while only one tile is in memory; input and output can be memory-mapped arrays.
* **Image borders as in the reference.** The image is padded with ``pad_mode`` (reflect) by the extent of
  a training patch around its centre voxel, like the reference pads before cutting border patches.
* Eval mode, channels-last weights, ``no_grad``, optional bfloat16 and a progress bar around each call.

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
from monai.inferers import Inferer
from monai.utils import ensure_tuple, ensure_tuple_rep
from torch import nn

from ..utils import check_amp, unwrap_network, use_bfloat16

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
        net = unwrap_network(network)
        needed = ("forward_dense", "dense_padding", "dense_receptive_field", "spatial_dims")
        if not all(hasattr(net, name) for name in needed):
            raise TypeError(
                "DenseInferer needs the ε-Seg network module (epsseg_monai.networks.EpsSegHVAE or a subclass); "
                f"got {type(network).__name__}. For a TorchScript export or another network use PatchCenterInferer."
            )
        return net

    def image_padding(self, network: nn.Module) -> list[tuple[int, int]]:
        """Padding ``(before, after)`` per spatial axis: the extent of a training patch around its centre."""
        return self._check_network(network).dense_padding(self.patch_size)

    def receptive_field(self, network: nn.Module) -> int:
        """Radius in pixels of the input region one output pixel depends on (the tiling halo it implies)."""
        return self._check_network(network).dense_receptive_field(self.patch_size)

    def _padded_logits(self, net: nn.Module, inputs: torch.Tensor, bar: Any) -> torch.Tensor:
        """Logits of one image batch (or tile) in one piece: the network's dense pass (eval mode set)."""
        dims = net.spatial_dims
        x = inputs.float().contiguous(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
        out = net.forward_dense(
            x, pad_mode=self.pad_mode, patch_size=self.patch_size, max_slab_voxels=self.max_slab_voxels, progress=bar
        )
        return out.float()

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
        shard: tuple[int, int] | None = None,
    ) -> Any:
        """Class probabilities of one image ``(C, *spatial)`` read and written tile by tile (out of core).

        ``image`` is any array that supports slicing (a NumPy array or ``np.memmap``, ``tifffile.memmap``,
        a zarr or HDF5 dataset) and is read one tile (with its margin) at a time, normalised per channel as
        ``(tile - mean) / std`` (the training run's ``intensity_stats.json``); ``out``, for example
        ``numpy.lib.format.open_memmap(path, mode="w+", dtype="float32", shape=(K, *spatial))``, receives
        the ``(K, *spatial)`` probabilities tile by tile, so neither needs to fit in memory with a
        ``tile_size`` set. ``out=None`` allocates a float32 NumPy array.

        ``shard=(i, n)`` predicts only the tiles ``i, i + n, i + 2n, ...`` of :meth:`tiles` and leaves the rest of
        ``out`` as it is: ``n`` processes (``torchrun`` ranks ``i = 0 .. n-1``) writing into one shared ``out``
        together give the whole image, each tile computed once. With a zarr ``out``, give it chunks that tile the
        image as ``tile_size`` does, so that no two processes write into one chunk.

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
        if shard is not None:
            index, count = (int(v) for v in shard)
            if count < 1 or not 0 <= index < count:
                raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}.")
            tiles = tiles[index::count]
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
