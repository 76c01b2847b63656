"""Deterministic EM-like synthetic images with dense and sparse labels: the bundle's embedded default data set.

:func:`synthetic_em` draws a 2D image or 3D volume that looks like a small electron-microscopy field of view:

* a tiling of cells (a warped Voronoi / power diagram), each cell outlined by a dark membrane 2-4 px thick
  (class ``2``);
* light-grey, finely textured cytoplasm (class ``1``) holding small dark round granules that are *labelled
  cytoplasm*: they match mitochondria in intensity, not in shape or size;
* several mitochondria per cell (class ``3``): elongated ellipses (ellipsoids in 3D), darker than cytoplasm,
  with lighter cristae stripes across the long axis and a thin dark outline;
* one or two large round nuclei (class ``4``, at 256²) with a blotchy mid-grey chromatin texture, darker
  heterochromatin at the rim, sometimes a dark nucleolus, and a dark double envelope that counts as nucleus;
* a smooth illumination gradient, a ~1 px Gaussian point-spread function, and Poisson plus Gaussian noise.

Per-pixel intensity alone separates the classes badly (the best intensity-interval classifier reaches a mean Dice
of about 0.5), while shape and context separate them well, which is what a sparsely supervised segmentation
model must learn. Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same
arrays (other NumPy/SciPy builds may round differently and flip the odd boundary pixel).

Length scales (cell size, organelles, membrane thickness) are those of a 256² image in 2D and of a 128³ volume
in 3D; smaller inputs shrink them with the shape (down to half size) so they still hold several cells, larger
inputs hold more cells of the same size, like a larger field of view at the same pixel size.

:func:`make_synthetic_dataset` writes a few such images in the bundle's folder convention (``images/``,
``labels/`` with sparse point annotations, ``val/``), plus the dense ``ground_truth/`` for evaluation, and
:func:`default_dataset_dir` places them under ``<bundle_root>/data/synthetic_em`` so that the bundle trains
without any download.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.special import ndtr

__all__ = ["CLASS_NAMES", "default_dataset_dir", "make_synthetic_dataset", "sparse_points", "synthetic_em"]

#: Class ids of the dense label maps (``0`` is never used in them; it means "unlabelled" in sparse maps).
CLASS_NAMES: dict[int, str] = {1: "cytoplasm", 2: "membrane", 3: "mitochondrion", 4: "nucleus"}

_CYTOPLASM, _MEMBRANE, _MITOCHONDRION, _NUCLEUS = 1, 2, 3, 4

#: Bump when :func:`synthetic_em` draws different images for the same arguments: cached data sets regenerate.
_GENERATOR_VERSION = 1
_GENERATOR = "epsseg_monai.data.synthetic.synthetic_em"
_MIN_EXTENT = 16


# ---------------------------------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sizes:
    """Length scales in pixels (ranges are ``(low, high)`` of uniform draws)."""

    scale: float
    cell_spacing: float  # mean distance kept between the seeds of ordinary cells (about the cell diameter)
    warp_amplitude: float  # displacement of the coordinates that makes cell outlines wavy
    warp_length: float  # correlation length of that displacement
    membrane: tuple[float, float]  # membrane thickness
    nucleus_radius: tuple[float, float]
    nucleus_gap: tuple[float, float]  # cytoplasm rim between nucleus and its cell's membrane
    envelope: tuple[float, float, float]  # outer membrane, lumen, inner membrane widths of the nuclear envelope
    mito_long: tuple[float, float]  # long semi-axis
    mito_short: tuple[float, float]  # short semi-axis (or semi-axes in 3D)
    mito_gap: float  # free space kept around a mitochondrion
    mito_fraction: float  # share of the free cytoplasm drawn as mitochondria (before clipping and rejections)
    cristae_period: tuple[float, float]
    granule_radius: tuple[float, float]
    granule_density: float  # granules per pixel of free cytoplasm


def _sizes(shape: tuple[int, ...]) -> _Sizes:
    """Length scales for ``shape``: the 256² (2D) / 128³ (3D) reference sizes, shrunk for smaller shapes."""
    reference = 256.0 if len(shape) == 2 else 128.0
    s = float(np.clip(min(shape) / reference, 0.5, 1.0))
    return _Sizes(
        scale=s,
        cell_spacing=(35.0 if len(shape) == 2 else 56.0) * s,
        warp_amplitude=4.5 * s,
        warp_length=22.0 * s,
        membrane=(2.5, max(2.6, 4.3 * s)),
        nucleus_radius=(27.0 * s, 31.0 * s) if len(shape) == 2 else (24.0 * s, 29.0 * s),
        nucleus_gap=(8.0 * s, 16.0 * s),
        envelope=(max(1.0, 1.3 * s), max(1.0, 1.6 * s), max(1.0, 1.3 * s)),
        mito_long=(7.0 * s, 13.0 * s),
        mito_short=(max(2.0, 3.0 * s), max(2.5, 4.5 * s)),
        mito_gap=1.5,
        mito_fraction=0.16 if len(shape) == 2 else 0.2,
        cristae_period=(max(4.0, 5.0 * s), max(4.5, 6.5 * s)),
        granule_radius=(1.0, 2.0),
        granule_density=0.004 if len(shape) == 2 else 0.002,
    )


def _ball_volume(radius: float, ndim: int) -> float:
    return math.pi ** (ndim / 2) / math.gamma(ndim / 2 + 1) * radius**ndim


def _smooth_noise(shape: tuple[int, ...], length: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``length`` (pixels), float32."""
    if length <= 4.0:
        field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), length)
    else:
        # white noise on a coarse grid, interpolated separably with Gaussian weights: cheap for long lengths
        step = float(length)
        field = rng.standard_normal(tuple(int(n / step) + 6 for n in shape)).astype(np.float32)
        for axis, n in enumerate(shape):
            knots = (np.arange(field.shape[axis]) - 2.5) * step
            weights = np.exp(-0.5 * ((np.arange(n)[:, None] - knots[None]) / (0.7 * step)) ** 2).astype(np.float32)
            weights /= weights.sum(1, keepdims=True)
            field = np.moveaxis(np.tensordot(weights, field, axes=([1], [axis])), 0, axis)
    field = field - field.mean()
    return field / max(float(field.std()), 1e-6)


def _poisson_disc(
    low: np.ndarray,
    high: np.ndarray,
    spacing: float,
    rng: np.random.Generator,
    occupied: list[tuple[np.ndarray, float]],
    first: np.ndarray | None = None,
) -> np.ndarray:
    """Dart-throwing sample of the box ``[low, high)`` avoiding balls ``(centre, radius)``.

    Every point draws its own exclusion diameter in ``spacing * [0.7, 1.3]`` (two points keep the mean of theirs
    apart), which gives cells of varied size. Candidates ``first`` are tried before the uniform ones.
    """
    ndim = len(low)
    n_expected = float(np.prod(high - low)) / _ball_volume(spacing / 2, ndim) * 0.6
    candidates = rng.uniform(low, high, size=(int(25 * n_expected) + 50, ndim))
    if first is not None:
        candidates = np.concatenate([first.reshape(-1, ndim), candidates])
    diameters = spacing * rng.uniform(0.7, 1.3, len(candidates))
    keep = np.ones(len(candidates), dtype=bool)
    for centre, radius in occupied:
        keep &= ((candidates - centre) ** 2).sum(1) >= radius**2
    candidates, diameters = candidates[keep], diameters[keep]
    accepted = np.empty_like(candidates)
    accepted_d = np.empty_like(diameters)
    n = 0
    for c, d in zip(candidates, diameters):
        if n == 0 or (((accepted[:n] - c) ** 2).sum(1) >= ((accepted_d[:n] + d) / 2) ** 2).all():
            accepted[n], accepted_d[n] = c, d
            n += 1
    return accepted[:n]


def _shell(centre: np.ndarray, radius: float, width: float, rng: np.random.Generator, n: int = 256) -> np.ndarray:
    """``n`` random points at distance ``radius + [0, width)`` from ``centre`` (the seeds of a nucleus' neighbours)."""
    directions = rng.standard_normal((n, len(centre)))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return centre + directions * (radius + width * rng.random((n, 1)))


def _place_nuclei(
    shape: tuple[int, ...], sz: _Sizes, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres, radii and Voronoi weights (radius + cytoplasm gap) of the nuclei; at least one, fully in view."""
    ndim = len(shape)
    reference = (256.0 if ndim == 2 else 128.0) * sz.scale  # 1-2 nuclei per reference field of view
    n_wanted = max(1, int(round(1.5 * float(np.prod(shape)) / reference**ndim * rng.uniform(0.7, 1.3))))
    centres, radii, weights = [], [], []
    for _ in range(20 * n_wanted):
        if len(centres) == n_wanted:
            break
        radius = min(rng.uniform(*sz.nucleus_radius), 0.25 * min(shape))  # small shapes: keep room for cells
        weight = radius + rng.uniform(*sz.nucleus_gap)
        half = np.asarray(shape, dtype=float) / 2
        margin = np.minimum(weight, half)  # keep the whole cell in view when it fits
        centre = rng.uniform(margin, np.asarray(shape) - margin)
        if all(np.linalg.norm(centre - c) >= weight + w + 0.3 * sz.cell_spacing for c, w in zip(centres, weights)):
            centres.append(centre)
            radii.append(radius)
            weights.append(weight)
    return np.asarray(centres).reshape(-1, ndim), np.asarray(radii), np.asarray(weights)


def _boundary(labels: np.ndarray) -> np.ndarray:
    """Pixels with a face neighbour of a different label (both sides of every interface)."""
    out = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        diff = labels[tuple(lo)] != labels[tuple(hi)]
        out[tuple(lo)] |= diff
        out[tuple(hi)] |= diff
    return out


def _tessellate(
    points: np.ndarray, nuc_points: np.ndarray, seeds: np.ndarray, nuc_centres: np.ndarray, nuc_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power diagram of ordinary seeds (weight 0, at ``points``) and nucleus centres (at ``nuc_points``).

    A point belongs to the candidate of lowest power ``|p - c|² - w²``. Ordinary cells are thus plain Voronoi cells;
    nucleated cell ``i`` (ids ``1..n_nuc``) always holds the ball of radius ``nuc_weights[i]`` around its centre,
    with straight boundaries close outside that ball.

    Returns:
        ``(cell, edge_dist, nuc_dist)``: int32 ids (ordinary cells from ``n_nuc + 1``), float32 distance to the
        nearest cell boundary (exact between ordinary cells, a first-order estimate next to nucleated ones), and
        the ``(N, n_nuc)`` distances to the nucleus centres.
    """
    n, n_nuc = len(points), len(nuc_centres)
    k = min(3, len(seeds))
    _, idx = cKDTree(seeds).query(points, k=k)
    idx = idx.reshape(n, k)
    nuc_centres = nuc_centres.astype(np.float32)
    # offsets from every candidate centre to the point, in that candidate's coordinates
    offsets = [nuc_points - c for c in nuc_centres] + [points - seeds[idx[:, j]].astype(np.float32) for j in range(k)]
    power = np.stack([(o**2).sum(1) for o in offsets], axis=1)  # (N, n_nuc + k)
    power[:, :n_nuc] -= (nuc_weights.astype(np.float32) ** 2)[None]
    rows = np.arange(n)
    best = power.argmin(1)
    p_best = power[rows, best]
    o_best = np.zeros_like(points)
    for j, o in enumerate(offsets):
        o_best = np.where((best == j)[:, None], o, o_best)
    edge = np.full(n, np.inf, dtype=np.float32)
    for j, o in enumerate(offsets):
        # the power difference is linear along the line between two centres: a Newton step is exact for ordinary pairs
        slope = 2 * np.linalg.norm(o - o_best, axis=1)
        edge = np.minimum(edge, np.where(best == j, np.inf, (power[:, j] - p_best) / np.maximum(slope, 1e-3)))
    cell = np.where(best < n_nuc, best + 1, idx[rows, np.maximum(best - n_nuc, 0)] + n_nuc + 1).astype(np.int32)
    nuc_dist = np.sqrt(power[:, :n_nuc] + (nuc_weights.astype(np.float32) ** 2)[None])
    return cell, edge, nuc_dist


def _orthonormal_frame(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows: ``direction`` (normalised) followed by random unit vectors orthogonal to it and to each other."""
    ndim = len(direction)
    frame = [direction / np.linalg.norm(direction)]
    while len(frame) < ndim:
        v = rng.standard_normal(ndim)
        for f in frame:
            v -= (v @ f) * f
        if np.linalg.norm(v) > 1e-3:
            frame.append(v / np.linalg.norm(v))
    return np.stack(frame)


# ---------------------------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------------------------


def synthetic_em(shape: Sequence[int] = (256, 256), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw an EM-like image and its dense label map.

    Args:
        shape: spatial shape, 2D ``(H, W)`` or 3D ``(D, H, W)``; every extent at least 16.
        seed: seed of ``numpy.random.default_rng``; the same seed always gives the same arrays.

    Returns:
        ``(image, labels)``: ``image`` is uint8 of ``shape`` (dark membranes on light cytoplasm); ``labels`` is
        uint8 of ``shape`` with every pixel labelled by a class id of :data:`CLASS_NAMES` (``1`` cytoplasm,
        ``2`` membrane, ``3`` mitochondrion, ``4`` nucleus). All four classes are present for 2D shapes of at
        least 128² and 3D shapes of at least 32³.

    Raises:
        ValueError: for a shape that is not 2D or 3D, or has an extent below 16.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < _MIN_EXTENT:
        raise ValueError(f"synthetic_em needs a 2D or 3D shape with every extent >= {_MIN_EXTENT}, got {shape}.")
    ndim = len(shape)
    rng = np.random.default_rng(seed)
    sz = _sizes(shape)

    # --- cells: power diagram of Poisson-disc seeds in warped coordinates, nuclei as weighted seeds ------------
    coords = np.indices(shape, dtype=np.float32)
    displacement = np.stack([sz.warp_amplitude * _smooth_noise(shape, sz.warp_length, rng) for _ in coords])
    nuc_centres, nuc_radii, nuc_weights = _place_nuclei(shape, sz, rng)
    n_nuc = len(nuc_centres)
    pad = sz.cell_spacing / 2 + sz.warp_amplitude * 3
    seeds = _poisson_disc(
        np.full(ndim, -pad),
        np.asarray(shape, dtype=float) + pad,
        sz.cell_spacing,
        rng,
        [(c, w + 0.25 * sz.cell_spacing) for c, w in zip(nuc_centres, nuc_weights)],
        first=np.concatenate(
            [
                _shell(c, w + 0.25 * sz.cell_spacing, 0.2 * sz.cell_spacing, rng)
                for c, w in zip(nuc_centres, nuc_weights)
            ]
            or [np.empty((0, ndim))]
        ),
    )
    # nuclei stay round: their cells see the coordinates only slightly warped
    nuc_coords = coords + 0.3 * displacement
    cell, edge_dist, nuc_dist = _tessellate(
        (coords + displacement).reshape(ndim, -1).T,
        nuc_coords.reshape(ndim, -1).T,
        seeds,
        nuc_centres,
        nuc_weights,
    )
    cell, edge_dist = cell.reshape(shape), edge_dist.reshape(shape)
    n_cells = n_nuc + len(seeds)

    # --- membranes: a band of smoothly varying thickness around every cell interface ---------------------------
    lo, hi = sz.membrane
    thickness = lo + (hi - lo) * ndtr(1.5 * _smooth_noise(shape, sz.cell_spacing / 3, rng)).astype(np.float32)
    membrane = edge_dist < thickness / 2

    # --- nuclei: depth below the (warped) sphere surface ----------------------------------------------------------
    depth = np.full(shape, -np.inf, dtype=np.float32)
    nucleus = np.zeros(shape, dtype=bool)
    if n_nuc:
        nd = nuc_dist.reshape(*shape, n_nuc)
        for i in range(n_nuc):
            mine = cell == i + 1
            depth[mine] = nuc_radii[i] - nd[..., i][mine]
        nucleus = (depth >= 0) & ~membrane

    # --- mitochondria: elongated ellipses/ellipsoids in the free cytoplasm, long axis along the membrane --------
    free_dist = ndimage.distance_transform_edt(~(membrane | nucleus)).astype(np.float32)
    grad = np.gradient(free_dist)
    mito_id = np.zeros(shape, dtype=np.int32)
    stripes = np.zeros(shape, dtype=np.float32)
    occupied = np.zeros(shape, dtype=bool)
    cand = np.flatnonzero(free_dist.ravel() >= sz.mito_short[0] + sz.mito_gap)
    cand_cell = cell.ravel()[cand]
    order = np.argsort(cand_cell, kind="stable")
    cand, cand_cell = cand[order], cand_cell[order]
    bounds = np.searchsorted(cand_cell, np.arange(n_cells + 2))
    n_mito = 0

    def paint(centre: np.ndarray, c: int, a: float, b: np.ndarray, min_share: float) -> bool:
        """Paint one mitochondrion of semi-axes ``a`` (long) and ``b`` into cell ``c``; False if it does not fit."""
        nonlocal n_mito
        g = np.array([gr[tuple(np.round(centre).astype(int))] for gr in grad])
        if np.linalg.norm(g) < 1e-3:
            g = rng.standard_normal(ndim)
        if ndim == 2:
            angle = math.atan2(g[0], g[1]) + math.pi / 2 + rng.normal(0.0, 0.45)
            frame = np.array([[math.sin(angle), math.cos(angle)], [math.cos(angle), -math.sin(angle)]])
        else:
            long_axis = rng.standard_normal(ndim)
            long_axis -= 0.8 * (long_axis @ g) * g / (g @ g)
            frame = _orthonormal_frame(long_axis, rng)
        h = int(math.ceil(a + sz.mito_gap + 1))
        ci = np.round(centre).astype(int)
        sl = tuple(slice(max(0, p - h), min(n, p + h + 1)) for p, n in zip(ci, shape))
        offs = [
            np.reshape(np.arange(s.start, s.stop) - centre[k], [-1 if j == k else 1 for j in range(ndim)])
            for k, s in enumerate(sl)
        ]
        axes = [sum(o * f[k] for k, o in enumerate(offs)) for f in frame]
        rho2 = (axes[0] / a) ** 2 + sum((ax / bb) ** 2 for ax, bb in zip(axes[1:], b))
        ellipse = rho2 <= 1
        pix = ellipse & (cell[sl] == c) & (free_dist[sl] >= sz.mito_gap) & ~occupied[sl]
        parts, n_parts = ndimage.label(pix)
        if n_parts > 1:  # clipping split it: keep the largest piece
            pix = parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
        n_pix = int(pix.sum())
        if n_pix == 0 or n_pix < min_share * int(ellipse.sum()):
            return False
        n_mito += 1
        mito_id[sl][pix] = n_mito
        period = rng.uniform(*sz.cristae_period)
        wobble = 0.6 * np.sin(axes[1] * (2 * math.pi / rng.uniform(6, 12)) + rng.uniform(0, 2 * math.pi))
        phase = 2 * math.pi * (axes[0] + wobble) / period + rng.uniform(0, 2 * math.pi)
        stripes[sl][pix] = np.broadcast_to(0.5 + 0.5 * np.cos(phase), pix.shape)[pix]
        halo = rho2 <= (1 + (sz.mito_gap + 0.5) / float(min(b))) ** 2
        occupied[sl] |= halo
        return True

    free_per_cell = np.bincount(cell[free_dist >= 2].ravel(), minlength=n_cells + 1)
    mean_mito = _ball_volume(1.0, ndim) * np.mean(sz.mito_long) * np.mean(sz.mito_short) ** (ndim - 1)
    for c in range(1, n_cells + 1):
        members = cand[bounds[c] : bounds[c + 1]]
        if len(members) == 0:
            continue
        expected = sz.mito_fraction * free_per_cell[c] / mean_mito
        for _ in range(int(expected + rng.random())):  # stochastic rounding: steadier shares than Poisson
            for _try in range(4):
                flat = members[rng.integers(len(members))]
                centre = np.asarray(np.unravel_index(flat, shape), dtype=float) + rng.uniform(-0.5, 0.5, ndim)
                b = rng.uniform(*sz.mito_short, size=ndim - 1)
                if free_dist[tuple(np.round(centre).astype(int))] < b.min() + sz.mito_gap:
                    continue
                if paint(centre, c, rng.uniform(*sz.mito_long), b, 0.6):
                    break
    if n_mito == 0:  # guarantee the class: the largest free spot gets a (possibly small) mitochondrion
        cyto_free = np.where(nucleus | membrane, 0, free_dist)
        flat = int(np.argmax(cyto_free))
        room = float(cyto_free.ravel()[flat]) - sz.mito_gap
        if room >= 1.0:
            b = np.full(ndim - 1, min(sz.mito_short[0], room))
            centre = np.asarray(np.unravel_index(flat, shape), dtype=float)
            paint(centre, int(cell.ravel()[flat]), 2.2 * float(b[0]), b, 0.0)
    mito = mito_id > 0

    # --- granules: small dark round distractors, labelled cytoplasm ------------------------------------------------
    cyto = ~(membrane | nucleus | mito)
    g_cand = np.flatnonzero((cyto & ~occupied & (free_dist >= sz.granule_radius[1] + 1)).ravel())
    n_gran = min(len(g_cand), rng.poisson(sz.granule_density * len(g_cand)))
    granule_dark = np.zeros(shape, dtype=np.float32)
    if n_gran:
        centres_mask = np.ones(shape, dtype=bool)
        radius_at = np.zeros(shape, dtype=np.float32)
        picked = rng.choice(g_cand, size=n_gran, replace=False)
        centres_mask.ravel()[picked] = False
        radius_at.ravel()[picked] = rng.uniform(*sz.granule_radius, size=n_gran)
        gdist, gidx = ndimage.distance_transform_edt(centres_mask, return_indices=True)
        r_near = radius_at[tuple(gidx)]
        granule_dark = (np.clip(r_near + 0.5 - gdist, 0.0, 1.0) * cyto).astype(np.float32)

    # --- labels -------------------------------------------------------------------------------------------------
    labels = np.full(shape, _CYTOPLASM, dtype=np.uint8)
    labels[mito] = _MITOCHONDRION
    labels[nucleus] = _NUCLEUS
    labels[membrane] = _MEMBRANE

    # --- intensities (0 = black, 1 = white) ---------------------------------------------------------------------
    cell_tone = rng.normal(0.0, 0.035, n_cells + 1).astype(np.float32)
    img = 0.66 + cell_tone[cell] + 0.05 * _smooth_noise(shape, 0.7, rng) + 0.03 * _smooth_noise(shape, 3.0, rng)
    # membranes: dark band plus a faint shadow in the neighbouring cytoplasm
    shadow = np.clip(1.0 - (edge_dist - thickness / 2) / 2.0, 0.0, 1.0)
    coverage = np.clip(thickness / 2 + 0.5 - edge_dist, 0.0, 1.0)  # anti-aliased membrane edge
    img = img - 0.10 * shadow
    img = img + (0.24 + 0.04 * _smooth_noise(shape, 1.0, rng) - img) * coverage
    # mitochondria: dark matrix, lighter cristae stripes, thin dark outline
    outline = mito & _boundary(mito_id)
    mito_tone = 0.27 + 0.28 * stripes**2
    img = np.where(mito, np.where(outline, 0.20, mito_tone), img)
    # granules
    img = img - (img - 0.18) * granule_dark
    # nuclei: blotchy chromatin, heterochromatin at the rim, nucleolus, dark double envelope
    if n_nuc:
        chromatin = _smooth_noise(shape, 2.5 * sz.scale, rng)
        blotch = 0.54 + 0.08 * chromatin - 0.08 * (chromatin > 0.7)
        rim = np.exp(-np.clip(depth - sum(sz.envelope), 0, None) / (3.0 * sz.scale))
        nuc_img = blotch - 0.10 * rim
        for i in range(n_nuc):
            if rng.random() < 0.6:
                r_nl = nuc_radii[i] * rng.uniform(0.18, 0.28)
                off = rng.standard_normal(ndim)
                c_nl = nuc_centres[i] + off / np.linalg.norm(off) * rng.uniform(0, nuc_radii[i] * 0.35)
                d_nl = np.sqrt(sum((w - c) ** 2 for w, c in zip(nuc_coords, c_nl)))
                nuc_img = np.where(d_nl < r_nl, 0.30 + 0.05 * chromatin, nuc_img)
        e1, e2, e3 = np.cumsum(sz.envelope)
        envelope = np.where(depth < e1, 0.24, np.where(depth < e2, 0.50, np.where(depth < e3, 0.27, nuc_img)))
        img = np.where(nucleus, envelope, img)
    # smooth illumination, point-spread function, shot and read noise
    illum = 1.0 + 0.10 * _smooth_noise(shape, min(shape) / 2, rng)
    ramp = rng.normal(0, 0.08 / max(shape), ndim).astype(np.float32)
    illum = illum + sum(r * (c - n / 2) for r, c, n in zip(ramp, coords, shape))
    img = ndimage.gaussian_filter((img * illum).astype(np.float32), 1.0)
    photons = 400.0
    img = rng.poisson(np.clip(img, 0, None) * photons) / photons + rng.normal(0.0, 0.03, shape)
    image = np.clip(np.round(20 + 220 * img), 0, 255).astype(np.uint8)
    return image, labels


def sparse_points(dense: np.ndarray, points_per_class: int, seed: int = 0) -> np.ndarray:
    """Sparse point annotations drawn from a dense label map.

    Args:
        dense: integer label map (any shape); every non-zero value is a class id.
        points_per_class: points drawn per class present (all of the class's pixels when it has fewer).
        seed: seed of ``numpy.random.default_rng``; the same seed draws the same points.

    Returns:
        uint8 array of ``dense.shape``: ``0`` (unlabelled) except at the drawn pixels, which hold their class
        id from ``dense``. Points are drawn uniformly without replacement within each class.

    Raises:
        ValueError: when ``points_per_class`` is negative or ``dense`` holds values outside 0..255.
    """
    if points_per_class < 0:
        raise ValueError(f"points_per_class must be >= 0, got {points_per_class}.")
    dense = np.asarray(dense)
    if dense.size and (dense.min() < 0 or dense.max() > 255):
        raise ValueError("sparse_points needs class ids in 0..255 (uint8 output).")
    rng = np.random.default_rng(seed)
    flat = dense.ravel()
    out = np.zeros(flat.shape, dtype=np.uint8)
    for cls in np.unique(flat):
        if cls == 0:
            continue
        where = np.flatnonzero(flat == cls)
        pick = rng.choice(where, size=min(points_per_class, len(where)), replace=False)
        out[pick] = cls
    return out.reshape(dense.shape)


# ---------------------------------------------------------------------------------------------------------------------
# data set on disk
# ---------------------------------------------------------------------------------------------------------------------

_SUBDIRS = ("images", "labels", "ground_truth")
#: Relative paths (posix) of every file :func:`make_synthetic_dataset` writes, its temporary files included.
_OWN_FILE = re.compile(
    r"^(?:(?:images|labels|ground_truth)/(?P<train>\.?synth_[0-9]+\.tif)"
    r"|val/(?:images|labels|ground_truth)/(?P<val>\.?synth_val_[0-9]+\.tif)"
    r"|(?P<meta>\.?dataset\.json))(?P<tmp>\.[0-9]+\.tmp)?$"
)


def _is_own_file(relative: str) -> bool:
    """Whether ``relative`` (posix, below the data set root) names a file :func:`make_synthetic_dataset` writes."""
    match = _OWN_FILE.match(relative)
    if match is None:
        return False
    name = next(g for g in (match["train"], match["val"], match["meta"]) if g)
    return name.startswith(".") == bool(match["tmp"])  # temporary files are hidden, final ones are not


def _image_seeds(seed: int, n: int) -> list[int]:
    """``n`` distinct 31-bit seeds derived from ``seed`` (a prefix of the list for ``n + 1``)."""
    seeds: list[int] = []
    words = np.random.SeedSequence(seed).generate_state(2 * n + 8, dtype=np.uint32)
    for word in words:  # a repeat among 31-bit words is rare, so twice as many words is plenty
        if int(word) >> 1 not in seeds:
            seeds.append(int(word) >> 1)
    if len(seeds) < n:
        raise RuntimeError(f"could not derive {n} distinct seeds from seed {seed}")
    return seeds[:n]


def _file_plan(num_train: int, num_val: int, seed: int) -> list[tuple[str, int]]:
    """``(name stem relative to root, image seed)`` for every image, training first."""
    seeds = _image_seeds(seed, num_train + num_val)
    train = [(f"synth_{i:02d}", seeds[i]) for i in range(num_train)]
    val = [(f"val/synth_val_{i:02d}", seeds[num_train + i]) for i in range(num_val)]
    return train + val


def _stem_paths(root: Path, stem: str) -> dict[str, Path]:
    """``{"images": ..., "labels": ..., "ground_truth": ...}`` paths of one image stem."""
    parent, _, name = stem.rpartition("/")
    base = root / parent if parent else root
    return {sub: base / sub / f"{name}.tif" for sub in _SUBDIRS}


def _is_own_metadata(path: Path) -> bool:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == _GENERATOR


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder and rename it into place (no torn files)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def make_synthetic_dataset(
    root: str | os.PathLike,
    num_train: int = 4,
    num_val: int = 1,
    shape: Sequence[int] = (256, 256),
    points_per_class: int = 100,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic EM data set in the bundle's folder convention (idempotent).

    Layout (all uint8 TIFF)::

        root/images/synth_00.tif ...            training images
        root/labels/synth_00.tif ...            sparse point annotations (0 = unlabelled, 1..4 = class id)
        root/ground_truth/synth_00.tif ...      dense label maps, for evaluation
        root/val/{images,labels,ground_truth}/synth_val_00.tif ...   validation images, same layout
        root/dataset.json                       parameters, per-image seeds, class names, package version

    Every image has its own seed derived from ``seed`` (listed in ``dataset.json``). ``dataset.json`` is removed
    first and written last, so an interrupted run is detected and redone by the next call.

    Args:
        root: output folder (created when missing).
        num_train: number of training images (>= 1).
        num_val: number of validation images (>= 0).
        shape: spatial shape of every image, 2D or 3D (see :func:`synthetic_em`).
        points_per_class: sparse points per class and image (see :func:`sparse_points`).
        seed: base seed.
        overwrite: regenerate even when ``root`` holds files this function did not write (those are kept).

    Returns:
        ``Path(root)``. Nothing is written when ``root/dataset.json`` records the same parameters and every
        file it lists exists.

    Raises:
        FileExistsError: when the data set must be (re)generated but ``root`` holds other files and
            ``overwrite`` is False, or ``root/dataset.json`` was not written by this function, or ``root`` is a file.
        ValueError: for invalid counts or shape.
    """
    root = Path(root)
    shape = tuple(int(n) for n in shape)
    if num_train < 1 or num_val < 0 or points_per_class < 0:
        raise ValueError(
            f"need num_train >= 1, num_val >= 0, points_per_class >= 0; got {num_train}, {num_val}, {points_per_class}."
        )
    if len(shape) not in (2, 3) or min(shape) < _MIN_EXTENT:
        raise ValueError(f"shape must be 2D or 3D with every extent >= {_MIN_EXTENT}, got {shape}.")
    params = {
        "num_train": int(num_train),
        "num_val": int(num_val),
        "shape": list(shape),
        "points_per_class": int(points_per_class),
        "seed": int(seed),
        "generator_version": _GENERATOR_VERSION,
    }
    plan = _file_plan(num_train, num_val, seed)
    expected = [p for stem, _ in plan for p in _stem_paths(root, stem).values()]
    meta_path = root / "dataset.json"

    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file; make_synthetic_dataset needs a folder path there.")
    if meta_path.is_file() and _is_own_metadata(meta_path):
        meta = json.loads(meta_path.read_text())
        if meta.get("parameters") == params and all(p.is_file() for p in expected):
            return root

    # (re)generate: only over our own files, unless told to write next to foreign ones (never deleting those)
    existing = [p for p in root.rglob("*") if p.is_file() or p.is_symlink()] if root.is_dir() else []
    own = [p for p in existing if _is_own_file(p.relative_to(root).as_posix())]
    if meta_path in own and not _is_own_metadata(meta_path):
        raise FileExistsError(
            f"{meta_path} exists but was not written by make_synthetic_dataset; refusing to replace it. "
            "Choose another (empty) folder for the synthetic data set."
        )
    foreign = sorted(set(existing) - set(own))
    if foreign and not overwrite:
        shown = ", ".join(str(p.relative_to(root)) for p in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise FileExistsError(
            f"{root} holds files not written by make_synthetic_dataset ({shown}); refusing to (re)generate the "
            "synthetic data set there. Choose an empty folder, remove those files, or pass overwrite=True to write "
            "next to them (they are kept)."
        )
    if meta_path.exists():
        meta_path.unlink()  # from here on, an interrupted run is visible as a missing dataset.json
    keep = set(expected)
    for p in own:
        if p not in keep and p != meta_path and p.exists():
            p.unlink()  # stale images of a previous, larger data set

    for stem, image_seed in plan:
        paths = _stem_paths(root, stem)
        image, dense = synthetic_em(shape, seed=image_seed)
        sparse = sparse_points(dense, points_per_class, seed=image_seed)
        for sub, array in (("images", image), ("labels", sparse), ("ground_truth", dense)):
            paths[sub].parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(paths[sub], lambda tmp, a=array: tifffile.imwrite(tmp, a))

    from epsseg_monai import __version__  # imported here: the package may import this module at start-up

    meta = {
        "name": "synthetic_em",
        "description": "Deterministic EM-like synthetic images (epsseg_monai.data.synthetic.synthetic_em); "
        "labels/ hold sparse point annotations, ground_truth/ the dense label maps.",
        "generator": _GENERATOR,
        "epsseg_monai_version": __version__,
        "parameters": params,
        "class_names": {str(k): v for k, v in CLASS_NAMES.items()},
        "unlabelled": 0,
        "images": {
            "train": [{"name": stem, "seed": s} for stem, s in plan if not stem.startswith("val/")],
            "val": [{"name": stem.rpartition("/")[2], "seed": s} for stem, s in plan if stem.startswith("val/")],
        },
    }
    root.mkdir(parents=True, exist_ok=True)
    _atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    return root


def default_dataset_dir(bundle_root: str | os.PathLike) -> Path:
    """The bundle's embedded default data set, ``<bundle_root>/data/synthetic_em``, generated on first use.

    Args:
        bundle_root: root folder of the MONAI bundle.

    Returns:
        ``Path(bundle_root) / "data" / "synthetic_em"`` after :func:`make_synthetic_dataset` (default arguments)
        made sure it is complete.
    """
    path = Path(bundle_root) / "data" / "synthetic_em"
    make_synthetic_dataset(path)
    return path
