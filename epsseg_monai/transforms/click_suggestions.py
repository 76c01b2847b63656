"""Where to click next: positions where a new click should help the model most.

Sparse labelling is a loop (click, train, look, click where it is wrong). From a trained model's class
probabilities this proposes ``num_clicks`` positions to annotate next:

- *uncertain*: the score of a pixel is ``1 - (p_first - p_second)``, one minus the margin between its two most
  probable classes (margin sampling; 0 = certain, 1 = a tie), which is highest on the boundaries and regions the
  model confuses;
- *spread out*: candidates are the local maxima of the score within ``min_distance``, and no two proposals are
  closer than ``min_distance`` pixels (nor closer than that to an existing click), so the clicks cover
  different structures instead of one uncertain boundary;
- *inside the image*: nothing is proposed within ``border_margin`` pixels of the image's edge (default
  ``min_distance``), where the model sees padding instead of the specimen and is uncertain for that reason alone
  (without a margin, 12 of 20 proposals on a 384² synthetic EM image sat on its top and left edges);
- *per class*: proposals are taken in turn from the regions predicted as each class, so a rare class's
  uncertain regions get clicks although the frequent classes hold most uncertain pixels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy
from scipy import ndimage

__all__ = [
    "SuggestClicks",
    "SuggestClicksD",
    "SuggestClicksDict",
    "SuggestClicksd",
    "click_uncertainty",
    "write_clicks_csv",
]


def click_uncertainty(probs: np.ndarray | torch.Tensor) -> np.ndarray:
    """``1 - (p_first - p_second)`` of channel-first class probabilities ``C[spatial]`` (margin uncertainty).

    Pixels whose probabilities are all zero (not predicted) get ``-1``, below every predicted pixel.
    """
    p = convert_to_numpy(probs).astype(np.float32)
    if p.ndim < 3:
        raise ValueError(f"probabilities must be channel-first C[spatial] with 2 or 3 spatial axes, got {p.shape}.")
    if p.shape[0] < 2:
        raise ValueError(f"need at least 2 classes to measure uncertainty, got {p.shape[0]} channel(s).")
    top2 = -np.partition(-p, 1, axis=0)[:2]
    score = 1.0 - (top2[0] - top2[1])
    score[p.sum(axis=0) == 0] = -1.0
    return score


class SuggestClicks(Transform):
    """Propose ``num_clicks`` positions to annotate next from class probabilities (see the module docstring).

    Args:
        num_clicks: how many positions to propose (fewer when the image has no more candidates).
        min_distance: smallest distance in pixels between two proposals, and between a proposal and an existing
            click.
        border_margin: no proposal within this many pixels of the image's edge (``None``: ``min_distance``;
            ``0``: anywhere). On an axis shorter than four margins it is a quarter of the axis (a thin stack keeps
            its central half of slices).

    Returns (``__call__``):
        An array ``(N, spatial_dims + 2)``: the position (one column per spatial axis, array order), the predicted
        class id ``1..C`` and the uncertainty score, ordered by proposal (round-robin over the classes, the most
        uncertain first within each).
    """

    def __init__(self, num_clicks: int, min_distance: float = 16.0, border_margin: float | None = None) -> None:
        if int(num_clicks) < 0:
            raise ValueError(f"num_clicks must be >= 0, got {num_clicks}.")
        if float(min_distance) < 1:
            raise ValueError(f"min_distance must be >= 1 pixel, got {min_distance}.")
        if border_margin is not None and float(border_margin) < 0:
            raise ValueError(f"border_margin must be >= 0 pixels (or None for min_distance), got {border_margin}.")
        self.num_clicks = int(num_clicks)
        self.min_distance = float(min_distance)
        self.border_margin = self.min_distance if border_margin is None else float(border_margin)

    def _inside(self, shape: tuple[int, ...]) -> np.ndarray:
        """Mask of the pixels at least ``border_margin`` (at most a quarter of the axis) from every edge."""
        inside = np.ones(shape, bool)
        for axis, size in enumerate(shape):
            m = min(int(np.ceil(self.border_margin)), size // 4)
            if m > 0:
                edge = [slice(None)] * len(shape)
                edge[axis] = np.r_[0:m, size - m : size]
                inside[tuple(edge)] = False
        return inside

    def __call__(self, probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        score = click_uncertainty(probs)
        p = convert_to_numpy(probs)
        dims = score.ndim
        out = np.zeros((0, dims + 2), np.float32)
        if self.num_clicks == 0:
            return out
        pred = p.argmax(axis=0) + 1
        valid = (score >= 0) & self._inside(score.shape)
        if labels is not None:
            lab = convert_to_numpy(labels)
            lab = lab.reshape(lab.shape[-dims:]) if lab.ndim > dims and lab.shape[0] == 1 else lab
            if lab.shape != score.shape:
                raise ValueError(f"labels of shape {lab.shape} do not match the prediction's {score.shape}.")
            if (lab > 0).any():  # not near an existing click
                valid &= ndimage.distance_transform_edt(lab == 0) >= self.min_distance
        size = max(1, int(self.min_distance))
        peaks = valid & (score == ndimage.maximum_filter(np.where(valid, score, -2.0), size=size))
        queues = []
        for c in np.unique(pred[peaks]):
            idx = np.flatnonzero((pred == c) & peaks)
            order = np.argsort(-score.flat[idx], kind="stable")
            queues.append((int(c), idx[order]))
        chosen: list[np.ndarray] = []
        rows: list[list[float]] = []
        pointers = [0] * len(queues)
        while len(rows) < self.num_clicks and any(pointers[i] < len(q[1]) for i, q in enumerate(queues)):
            for i, (c, idx) in enumerate(queues):
                while pointers[i] < len(idx) and len(rows) < self.num_clicks:
                    flat = idx[pointers[i]]
                    pointers[i] += 1
                    pos = np.array(np.unravel_index(flat, score.shape), dtype=np.float64)
                    if chosen and np.min(np.linalg.norm(np.stack(chosen) - pos, axis=1)) < self.min_distance:
                        continue
                    chosen.append(pos)
                    rows.append([*pos.tolist(), float(c), float(score.flat[flat])])
                    break
        return np.asarray(rows, np.float32).reshape(-1, dims + 2) if rows else out


class SuggestClicksd(MapTransform):
    """Dictionary version of :class:`SuggestClicks`: proposals from the probabilities under ``keys``, written to
    ``clicks_key``. Existing clicks are avoided: those under ``label_key`` when the data holds them, else those of
    ``<label_dir>/<image name>.*`` when that file exists (the bundle's dataset layout: ``labels/`` beside
    ``images/``).

    Args:
        keys: keys of the probability maps ``C[spatial]``.
        num_clicks, min_distance, border_margin: see :class:`SuggestClicks`.
        label_key: key of the sparse labels, if the data holds them.
        label_dir: folder of the sparse label files, read when ``label_key`` is absent from the data.
        image_key: key of the image whose file name (``filename_or_obj``) names the label file.
        clicks_key: where the proposals go (``(N, spatial_dims + 2)``, see :class:`SuggestClicks`).
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_clicks: int,
        min_distance: float = 16.0,
        border_margin: float | None = None,
        label_key: str | None = "label",
        label_dir: str | None = None,
        image_key: str = "image",
        clicks_key: str = "clicks",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.suggest = SuggestClicks(num_clicks, min_distance, border_margin)
        self.label_key, self.label_dir, self.image_key, self.clicks_key = label_key, label_dir, image_key, clicks_key

    def _labels(self, d: Mapping[Hashable, Any]) -> Any:
        if self.label_key is not None and d.get(self.label_key) is not None:  # (an evaluator's output has None)
            return d[self.label_key]
        if self.label_dir is None or not Path(self.label_dir).is_dir():
            return None
        from ..data.image_io import image_stem, list_images
        from .load_image import LoadMicroscopyImage

        src = dict(getattr(d.get(self.image_key), "meta", {}) or {}).get("filename_or_obj")
        if not src:
            return None
        matches = [f for f in list_images(self.label_dir) if image_stem(f) == image_stem(str(src))]
        return LoadMicroscopyImage()(str(matches[0])) if matches else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        labels = self._labels(d)
        for key in self.key_iterator(d):
            d[self.clicks_key] = self.suggest(d[key], labels)
        return d


SuggestClicksD = SuggestClicksDict = SuggestClicksd


def write_clicks_csv(clicks: np.ndarray, path: str | Path) -> Path:
    """Write proposals of :class:`SuggestClicks` as a napari Points CSV (``index,axis-0,axis-1[,axis-2]``) with the
    columns ``predicted_class`` and ``uncertainty``; napari opens it as a Points layer."""
    clicks = np.asarray(clicks).reshape(len(clicks), -1)
    dims = clicks.shape[1] - 2
    path = Path(path)
    lines = [",".join(["index", *(f"axis-{i}" for i in range(dims)), "predicted_class", "uncertainty"])]
    for i, row in enumerate(clicks):
        position = [str(int(v)) for v in row[:dims]]
        lines.append(",".join([str(i), *position, str(int(row[dims])), f"{row[dims + 1]:.4f}"]))
    path.write_text("\n".join(lines) + "\n")
    return path
