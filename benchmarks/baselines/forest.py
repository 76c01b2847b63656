"""ilastik/Labkit-style pixel classifier: a random forest on a bank of Gaussian filter responses.

Features (:func:`pixel_features`), all computed in float32 with ``scipy.ndimage`` (reflecting borders,
Gaussian kernels truncated at 4 sigma), at the scales ``SIGMAS = (0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0)``:

* Gaussian smoothing ``G_s * I`` at every sigma (sigma 0.3 is nearly the raw intensity);
* at every sigma of at least 0.5, i.e. from 0.7 on (as in ilastik, the 0.3 scale gives smoothing only):

  - Laplacian of Gaussian ``Ixx + Iyy`` (second derivatives of Gaussian at sigma),
  - Gaussian gradient magnitude ``sqrt(Ix^2 + Iy^2)`` (first derivatives of Gaussian at sigma),
  - difference of Gaussians ``G_s * I - G_{0.66 s} * I`` (the 0.66 ratio ilastik uses),
  - the two eigenvalues (larger first) of the structure tensor: the outer products of the gradient
    ``(Ix, Iy)`` at inner scale sigma, smoothed with a Gaussian at outer scale ``0.5 * sigma``,
  - the two eigenvalues (larger first) of the Hessian of Gaussian ``[[Ixx, Ixy], [Ixy, Iyy]]`` at sigma.

That is 7 + 6 * 7 = 49 features per pixel. Derivatives are not scale-normalised (a random forest is
insensitive to per-feature scaling).

The forest (scikit-learn ``RandomForestClassifier``, 100 trees, ``random_state=0``) is trained on the features
of the annotated pixels only and predicts every pixel; prediction runs on blocks of rows so that only one
image's feature stack (``H * W * 49 * 4`` bytes, 196 MiB for 1024x1024) and one block's class votes are held.
Requires the ``benchmarks`` extra (``pip install -e ".[benchmarks]"``, scikit-learn).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["SIGMAS", "RandomForestBaseline", "feature_names", "pixel_features"]

#: ilastik's default scales.
SIGMAS: tuple[float, ...] = (0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
#: Scales below this only give the Gaussian smoothing feature (ilastik offers only smoothing at 0.3).
_MIN_DERIVATIVE_SIGMA = 0.5
_DOG_RATIO = 0.66
_STRUCTURE_OUTER_RATIO = 0.5
_PER_SCALE = ("log", "ggm", "dog", "st_eig1", "st_eig2", "hess_eig1", "hess_eig2")


def feature_names(sigmas: Sequence[float] = SIGMAS) -> list[str]:
    """Names of the features :func:`pixel_features` returns, in channel order (e.g. ``"log_s1.6"``)."""
    names = []
    for s in sigmas:
        names.append(f"gauss_s{s:g}")
        if s >= _MIN_DERIVATIVE_SIGMA:
            names.extend(f"{f}_s{s:g}" for f in _PER_SCALE)
    return names


def _eig2(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (larger, smaller) of the symmetric 2x2 matrices ``[[a, b], [b, c]]``, elementwise."""
    mean = 0.5 * (a + c)
    radius = np.sqrt((0.5 * (a - c)) ** 2 + b**2)
    return mean + radius, mean - radius


def pixel_features(image: np.ndarray, sigmas: Sequence[float] = SIGMAS) -> np.ndarray:
    """Filter-bank features of every pixel of a 2D image, see the module docstring.

    Args:
        image: ``(H, W)`` intensities (any real dtype; computed in float32).
        sigmas: Gaussian scales in pixels.

    Returns:
        ``(H, W, F)`` float32 array, channels named by :func:`feature_names`.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {img.shape}.")
    names = feature_names(sigmas)
    out = np.empty(img.shape + (len(names),), dtype=np.float32)
    k = 0

    def put(x: np.ndarray) -> None:
        nonlocal k
        out[..., k] = x
        k += 1

    for s in sigmas:
        smooth = ndimage.gaussian_filter(img, s)
        put(smooth)
        if s < _MIN_DERIVATIVE_SIGMA:
            continue
        ix = ndimage.gaussian_filter(img, s, order=(0, 1))
        iy = ndimage.gaussian_filter(img, s, order=(1, 0))
        ixx = ndimage.gaussian_filter(img, s, order=(0, 2))
        iyy = ndimage.gaussian_filter(img, s, order=(2, 0))
        ixy = ndimage.gaussian_filter(img, s, order=(1, 1))
        put(ixx + iyy)
        put(np.sqrt(ix**2 + iy**2))
        put(smooth - ndimage.gaussian_filter(img, _DOG_RATIO * s))
        outer = _STRUCTURE_OUTER_RATIO * s
        jxx = ndimage.gaussian_filter(ix * ix, outer)
        jxy = ndimage.gaussian_filter(ix * iy, outer)
        jyy = ndimage.gaussian_filter(iy * iy, outer)
        for eig in _eig2(jxx, jxy, jyy):
            put(eig)
        for eig in _eig2(ixx, ixy, iyy):
            put(eig)
    assert k == len(names)
    return out


class RandomForestBaseline:
    """Random-forest pixel classifier trained on sparse annotations (ilastik/Labkit-style).

    Args:
        sigmas: filter scales, see :func:`pixel_features`.
        n_estimators: number of trees.
        n_jobs: parallel jobs for fitting and prediction (``-1``: all cores).
        random_state: seed of the forest.
        chunk_rows: image rows classified per block in :meth:`predict` (bounds the memory of the votes).
        **forest_kwargs: further ``RandomForestClassifier`` arguments.
    """

    def __init__(
        self,
        sigmas: Sequence[float] = SIGMAS,
        n_estimators: int = 100,
        n_jobs: int | None = -1,
        random_state: int = 0,
        chunk_rows: int = 128,
        **forest_kwargs: object,
    ) -> None:
        try:
            from sklearn.ensemble import RandomForestClassifier
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("the random-forest baseline needs scikit-learn: pip install -e '.[benchmarks]'") from err
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, got {chunk_rows}.")
        self.sigmas = tuple(sigmas)
        self.chunk_rows = chunk_rows
        self.forest = RandomForestClassifier(
            n_estimators=n_estimators, n_jobs=n_jobs, random_state=random_state, **forest_kwargs
        )
        self.num_train_pixels = 0

    def fit(self, images: Sequence[np.ndarray], sparse_labels: Sequence[np.ndarray]) -> RandomForestBaseline:
        """Train on the annotated pixels of the images.

        Args:
            images: ``(H, W)`` images (a stacked ``(N, H, W)`` array or a sequence; sizes may differ).
            sparse_labels: matching label maps, ``0`` = unlabelled, ``1..C`` = class ids.

        Returns:
            ``self``.
        """
        if len(images) != len(sparse_labels):
            raise ValueError(f"{len(images)} images for {len(sparse_labels)} label maps.")
        xs, ys = [], []
        for image, labels in zip(images, sparse_labels):
            labels = np.asarray(labels)
            if labels.shape != np.shape(image):
                raise ValueError(f"label shape {labels.shape} differs from image shape {np.shape(image)}.")
            mask = labels > 0
            if not mask.any():
                continue
            xs.append(pixel_features(image, self.sigmas)[mask])
            ys.append(labels[mask].astype(np.int64))
        if not xs:
            raise ValueError("no annotated pixels (all labels are 0).")
        x, y = np.concatenate(xs), np.concatenate(ys)
        self.num_train_pixels = len(y)
        self.forest.fit(x, y)
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class id of every pixel of one ``(H, W)`` image.

        Returns:
            ``(H, W)`` int64 map of the class ids seen in training.
        """
        feats = pixel_features(image, self.sigmas)
        h, w, f = feats.shape
        out = np.empty((h, w), dtype=np.int64)
        for r in range(0, h, self.chunk_rows):
            block = feats[r : r + self.chunk_rows].reshape(-1, f)
            out[r : r + self.chunk_rows] = self.forest.predict(block).reshape(-1, w)
        return out
