"""The dense pass of an ε-Seg network: every pixel's class logits, exactly, in one fully convolutional pass.

Prediction needs only the bottom-up path, the top-level posterior means and the segmentation head (with the
fine-detail head also the finer levels' features at the centre pixel), all convolutional, so the class of
every pixel can be computed at once instead of one network pass per pixel:

* **Shift-and-stitch as a phase tree.** The bottom-up path halves the resolution ``L`` times (blur-pool,
  stride 2), so a plain fully convolutional pass gives logits on a grid of stride ``2**L`` only. Each
  blur-pool is instead evaluated at both offsets (phases) along each axis; every phase is an ordinary
  half-resolution map that the following blocks process unchanged, and the head's window convolution on
  the top map of each phase combination gives the logits of one of the ``2**(L*d)`` interleaved sub-grids.
  This is exactly the network with strides turned into dilations (à trous), with the same arithmetic per
  output pixel, but every convolution stays a dense, non-dilated one on a compact map, and phases are
  processed depth first, so only one map per level is alive at a time. The fine-detail head's inputs are
  the maps on the path from the root to each leaf, read with the stride of the leaf's sub-grid.
* **Only what is needed.** With a ``needed`` mask (training on sparse labels), sub-trees without a needed
  output position are skipped, and each sub-tree runs only on the batch items that need it.
* **Tiled stages.** Each stage (level ``l``: its 3x3 convolution, one blur-pool phase and its residual blocks)
  can be evaluated in tiles along every spatial axis. A tile is extended by the stage's receptive-field
  radius, and only positions that see no tile border are kept, so the result equals the untiled computation
  (in eval mode; batch norm in training mode would take per-tile statistics, so training passes are untiled).

The output position ``o`` of the valid pass is the pixel whose training patch starts at ``o`` minus the patch's
centre offset; see :meth:`PhaseTree.padding`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...utils import center_index, center_region_slices
from ..blocks.blur_pool import BlurPool
from ..blocks.receptive_field import receptive_field_radius

__all__ = ["PhaseTree"]

#: One chain entry: (fine level, its map, pixel offset of the map's first cell per axis).
_Link = tuple[int, torch.Tensor, tuple[int, ...]]


class PhaseTree:
    """Exact dense logits of an :class:`~epsseg_monai.networks.EpsSegHVAE` (see the module docstring).

    Args:
        net: the network (its ``stem``, ``bottom_up``, ``top_posterior``, ``head`` and ``head_fine_levels``).
        patch_size: side of the training patch whose centre pixel's class is predicted (sets the padding and the
            head's window offsets); ``None`` uses ``net.patch_size``.
        max_slab_voxels: budget, in voxels x channels / 64, of a stage tile's largest map (its full-resolution
            convolution output, halo included); ``None`` evaluates every stage in one piece.
        bar: a progress bar updated once per sub-grid (``tqdm``), or ``None``.
    """

    def __init__(
        self,
        net: nn.Module,
        patch_size: Sequence[int] | int | None = None,
        max_slab_voxels: int | None = None,
        bar: Any = None,
    ) -> None:
        self.net = net
        size = net.patch_size if patch_size is None else patch_size
        dims = net.spatial_dims
        self.patch = (int(size),) * dims if isinstance(size, int) else tuple(int(s) for s in size)
        self.num_levels = len(net.bottom_up)
        self.fine_levels = tuple(getattr(net, "head_fine_levels", ()))
        self.max_slab_voxels = max_slab_voxels
        self.bar = bar
        self.pads = self.padding()

    # ------------------------------------------------------------------ geometry
    def padding(self) -> list[tuple[int, int]]:
        """``(before, after)`` per spatial axis: the extent of a training patch around its centre pixel.

        ``before`` is the distance from the first pixel the head window covers to the centre pixel; padding the
        image by it makes every output of the valid pass a pixel of the image.
        """
        factor = 2**self.num_levels
        window = self.net.head.window
        pads = []
        for p in self.patch:
            if p % factor:
                raise ValueError(f"patch_size {p} must be divisible by 2**num_levels = {factor}.")
            start = center_region_slices((p // factor,), window)[0].start  # head window in the patch's top map
            before = center_index(p) - factor * start  # centre pixel relative to the window's first cell
            after = factor * (window - 1) - before
            for level in self.fine_levels:
                if before % 2**level:
                    raise ValueError(
                        f"With patch_size {p} the centre pixel is not a cell centre of level {level} (its offset "
                        f"{before} from the head window is not a multiple of {2**level}); the fine-detail head "
                        f"needs patch sizes whose half is a multiple of {2 ** max(self.fine_levels)}."
                    )
            pads.append((before, max(after, 0)))
        return pads

    def stem_radius(self) -> int:
        return receptive_field_radius(self.net.stem)

    def reads_stem(self) -> bool:
        """Whether the head reads the stem's map (then it is computed once, as its own stage)."""
        return 0 in self.fine_levels

    def stage_radius(self, level: int, with_stem: bool | None = None) -> int:
        """Receptive-field radius of stage ``level`` in rows of its input map (level 0 with the stem or not)."""
        modules = list(self.net.bottom_up[level])
        radius = receptive_field_radius(modules[0]) + 1
        if with_stem is None:
            with_stem = not self.reads_stem()
        if level == 0 and with_stem:
            radius += self.stem_radius()
        return radius + 2 * sum(receptive_field_radius(m) for m in modules[2:])

    def receptive_field(self) -> int:
        """Radius in pixels of the input region one output pixel depends on (the tiling halo it implies)."""
        radius = sum(2**level * self.stage_radius(level, with_stem=True) for level in range(self.num_levels))
        radius += 2**self.num_levels * receptive_field_radius(self.net.top_posterior)
        before, after = max(self.pads, key=max)
        return radius + max(before, after)

    # ------------------------------------------------------------------ stages
    def stage(self, level: int, x: torch.Tensor, phase: Sequence[int], with_stem: bool = True) -> torch.Tensor:
        """Stage ``level`` on ``x``: [stem,] conv, the blur-pool sub-grid starting at ``phase``, blocks."""
        net = self.net
        modules = list(net.bottom_up[level])
        if level == 0 and with_stem:
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

    def rows(self, sizes: Sequence[int], out_sizes: Sequence[int], stride: int, halo: int, channels: int) -> list[int]:
        """Output rows per tile along each axis, so that a tile's largest map fits ``max_slab_voxels``.

        The largest map of a stage is its full-resolution output over the tile and its halo,
        ``prod(stride * rows + 2 * halo) * channels`` elements. The axis with the longest tile (halo included) is
        split first, which keeps tiles near-cubic and so the recomputed halo small relative to the tile.
        """
        out_sizes = list(out_sizes)
        if self.max_slab_voxels is None:
            return out_sizes
        budget = max(1, (self.max_slab_voxels * 64) // channels)
        pieces = [1] * len(out_sizes)
        while True:
            rows = [-(-m // k) for m, k in zip(out_sizes, pieces)]
            extents = [min(n, stride * r + 2 * halo + 1) for n, r in zip(sizes, rows)]
            if math.prod(extents) <= budget or max(rows) == 1:
                return rows
            axis = max((d for d, r in enumerate(rows) if r > 1), key=lambda d: extents[d])  # first on ties
            pieces[axis] += 1

    def tiled(
        self,
        fn: Callable[[torch.Tensor, Sequence[int]], torch.Tensor],
        x: torch.Tensor,
        stride: int,
        phase: Sequence[int],
        halo: int,
        channels: int,
    ) -> torch.Tensor:
        """``fn(x, phase)`` (outputs at input rows ``phase + stride * k``) in tiles with the receptive-field halo.

        Only output positions whose receptive field lies inside the tile are kept, so the result equals the
        untiled computation.
        """
        out_sizes = [-(-(s - p) // stride) for s, p in zip(x.shape[2:], phase)]
        rows = self.rows(x.shape[2:], out_sizes, stride, halo, channels)
        if rows == out_sizes:
            return fn(x, phase)
        halo += halo % stride
        axes = []  # per axis: (output range, input range, local phase, first kept row of the piece)
        for n, m, r, p in zip(x.shape[2:], out_sizes, rows, phase):
            spans = []
            for k0 in range(0, m, r):
                k1 = min(m, k0 + r)
                first, last = p + stride * k0, p + stride * (k1 - 1)
                lo, hi = max(0, first - halo), min(n, last + halo + 1)
                local = (first - lo) % stride
                spans.append((slice(k0, k1), slice(lo, hi), local, (first - lo - local) // stride))
            axes.append(spans)
        out: torch.Tensor | None = None
        for tile in itertools.product(*axes):
            piece = fn(x[(slice(None), slice(None), *(t[1] for t in tile))], [t[2] for t in tile])
            keep = (slice(None), slice(None), *(slice(t[3], t[3] + t[0].stop - t[0].start) for t in tile))
            piece = piece[keep]
            if out is None:
                out = piece.new_empty((piece.shape[0], piece.shape[1], *out_sizes))
            out[(slice(None), slice(None), *(t[0] for t in tile))] = piece
        assert out is not None
        return out

    def run_stage(self, level: int, x: torch.Tensor, phase: Sequence[int], with_stem: bool = True) -> torch.Tensor:
        """:meth:`stage` over ``x`` in tiles along every spatial axis (see :meth:`tiled`)."""

        def fn(t: torch.Tensor, p: Sequence[int]) -> torch.Tensor:
            return self.stage(level, t, p, with_stem)

        channels = self.net.bottom_up[level][0].out_channels
        return self.tiled(fn, x, 2, phase, self.stage_radius(level, with_stem), channels)

    def run_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem over ``x`` in tiles (its map is kept when the fine-detail head reads it)."""
        channels = self.net.stem[0].out_channels
        return self.tiled(lambda t, p: self.net.stem(t), x, 1, (0,) * (x.ndim - 2), self.stem_radius(), channels)

    # ------------------------------------------------------------------ the tree
    def logits(self, x: torch.Tensor, needed: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the valid pass over ``x`` (already padded): ``B C [spatial - before - after]``.

        Args:
            x: ``B in_channels [spatial]`` input.
            needed: optional boolean ``B [spatial - before - after]`` mask of the output positions needed;
                sub-trees without one are skipped (their logits are 0; the other positions of a computed
                sub-grid are computed too) and each sub-tree runs only on the batch
                items that need it (a sparse-label training pass).
        """
        dims = x.ndim - 2
        zero = (0,) * dims
        chain: list[_Link] = []
        with_stem = True
        if self.reads_stem():
            x = self.run_stem(x)
            chain.append((0, x, zero))
            with_stem = False
        if needed is not None:
            span = (self.net.head.window - 1) * 2**self.num_levels
            sizes = [s - span for s in x.shape[2:]]
            if tuple(needed.shape) != (x.shape[0], *sizes):
                raise ValueError(f"needed must have shape {(x.shape[0], *sizes)}, got {tuple(needed.shape)}.")
        return self._node(x, 0, chain, zero, needed, with_stem)

    def _align(self, link: _Link, offset: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
        """The cells of a fine level's map at the centre pixels of a leaf's output positions."""
        level, fmap, start = link
        step = 2 ** (self.num_levels - level)
        index = []
        for o, s, (before, _), n in zip(offset, start, self.pads, sizes):
            first = (o - s + before) // 2**level
            index.append(slice(first, first + step * (n - 1) + 1, step))
        out = fmap[(slice(None), slice(None), *index)]
        if tuple(out.shape[2:]) != tuple(sizes):
            raise RuntimeError(f"fine level {level}: map {tuple(fmap.shape)} too small for {tuple(sizes)} outputs.")
        return out

    def _node(
        self,
        x: torch.Tensor,
        level: int,
        chain: list[_Link],
        offset: tuple[int, ...],
        needed: torch.Tensor | None,
        with_stem: bool,
    ) -> torch.Tensor:
        """Logits of every output position of ``x`` (a phase map of level ``level``), depth first over phases."""
        net = self.net
        dims = x.ndim - 2
        if level == self.num_levels:
            mu = net.top_posterior(x)[0]
            sizes = [s - net.head.window + 1 for s in mu.shape[2:]]
            fine = [self._align(link, offset, sizes) for link in chain]
            out = net.head.forward_dense(mu, fine)
            if self.bar is not None:
                self.bar.update(1)
            return out
        span = (net.head.window - 1) * 2 ** (self.num_levels - level)
        sizes = [s - span for s in x.shape[2:]]
        if min(sizes) < 1:
            raise ValueError(f"Map {tuple(x.shape[2:])} is too small for the head at level {level}.")
        batch = x.shape[0]
        out: torch.Tensor | None = None
        for phase in itertools.product((0, 1), repeat=dims):
            if any(p >= size for p, size in zip(phase, sizes)):
                continue  # this sub-grid has no output position (a side of 1 at this level)
            grid = (slice(None), slice(None), *(slice(p, None, 2) for p in phase))
            rows, sub_x, sub_chain, sub_needed = None, x, chain, None
            if needed is not None:
                sub_needed = needed[grid[1:]]
                flags = sub_needed.reshape(batch, -1).any(1)
                if not bool(flags.any()):
                    continue
                if not bool(flags.all()):
                    rows = flags
                    sub_x, sub_needed = x[rows], sub_needed[rows]
                    sub_chain = [(lvl, m[rows], s) for lvl, m, s in chain]
            child_x = self.run_stage(level, sub_x, phase, with_stem)
            child_offset = tuple(o + p * 2**level for o, p in zip(offset, phase))
            if level + 1 in self.fine_levels:
                sub_chain = [*sub_chain, (level + 1, child_x, child_offset)]
            child = self._node(child_x, level + 1, sub_chain, child_offset, sub_needed, with_stem)
            if out is None:
                shape = (batch, child.shape[1], *sizes)
                out = child.new_empty(shape) if needed is None else child.new_zeros(shape)
            if rows is None:
                out[grid] = child
            else:
                view = out[grid]
                view[rows] = child
        if out is None:  # nothing needed below this node
            out = x.new_zeros((batch, net.head.num_classes, *sizes))
        return out
