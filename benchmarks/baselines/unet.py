"""U-Net baseline trained on the same sparse clicks (or, as an upper bound, on dense labels).

Network: MONAI ``UNet`` in 2D, one input channel, ``C`` output logits, channels ``(32, 64, 128, 256)`` with
strides ``(2, 2, 2)`` (three down-samplings, so inputs must be multiples of 8), two residual units per level,
MONAI's defaults otherwise (3x3 kernels, PReLU, instance norm, no dropout); about 1.6 M parameters.

Training (:meth:`UNetBaseline.fit`):

* inputs are z-scored with the mean and standard deviation of all training pixels (kept for prediction);
* each sample is a square crop (``crop_size``, default 128). Sparse mode: a labelled pixel is drawn uniformly
  among all labelled pixels of all images, the crop centre is that pixel moved by a uniform jitter of at most
  ``crop_size // 4`` per axis, so the drawn pixel always lies inside the crop. Dense mode: the centre is drawn
  uniformly over all pixels of all images. Crops reaching past the border read the image reflected; the label
  map is padded with ``0`` (unlabelled) there, so only real annotated pixels enter the loss;
* each crop is rotated by a random multiple of 90 degrees and mirrored with probability 1/2 (the 8 symmetries
  of the square);
* loss: cross-entropy over the labelled pixels only (:func:`masked_cross_entropy`: targets ``label - 1``,
  unlabelled pixels get ``ignore_index=-100``), mean over the labelled pixels of the batch;
* Adam, learning rate 1e-3, batches of 8, until ``time_budget_s`` seconds of training loop have passed or
  ``max_steps`` steps are done, whichever comes first (the step running when the budget ends is finished).

Prediction (:meth:`UNetBaseline.predict`): the whole image with MONAI's ``SlidingWindowInferer`` (256x256
windows, overlap 0.25, Gaussian blending); the class is the argmax of the logits plus one. Images smaller than
a window are reflect-padded to the window size first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet

__all__ = ["IGNORE_INDEX", "UNetBaseline", "masked_cross_entropy"]

#: Target value of unlabelled pixels in the cross-entropy.
IGNORE_INDEX = -100


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the labelled pixels only.

    Args:
        logits: ``(B, C, H, W)`` class scores.
        labels: ``(B, H, W)`` class ids, ``0`` = unlabelled, ``1..C`` = classes.

    Returns:
        Scalar loss; NaN if no pixel is labelled.
    """
    target = torch.where(labels > 0, labels.long() - 1, torch.full_like(labels, IGNORE_INDEX, dtype=torch.long))
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


class _CropSampler:
    """Random training crops (see the module docstring) from z-scored images and their label maps."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        crop_size: int,
        dense: bool,
        jitter: int,
        rng: np.random.Generator,
    ) -> None:
        self.crop, self.dense, self.jitter, self.rng = crop_size, dense, jitter, rng
        self.pad = crop_size
        self.images = [np.pad(im, self.pad, mode="reflect") for im in images]
        self.labels = [np.pad(lab.astype(np.int16), self.pad, mode="constant") for lab in labels]
        self.shapes = [im.shape for im in images]
        if dense:
            sizes = np.array([h * w for h, w in self.shapes], dtype=np.float64)
            self.image_p = sizes / sizes.sum()
        else:
            idx = [np.nonzero(lab > 0) for lab in labels]
            self.points = np.concatenate(
                [np.stack([np.full(len(y), i), y, x], axis=1) for i, (y, x) in enumerate(idx)]
            ).astype(np.int64)

    def centre(self) -> tuple[int, int, int]:
        """An image index and a crop centre in that image's (unpadded) coordinates."""
        if self.dense:
            i = int(self.rng.choice(len(self.shapes), p=self.image_p))
            h, w = self.shapes[i]
            return i, int(self.rng.integers(h)), int(self.rng.integers(w))
        i, y, x = self.points[self.rng.integers(len(self.points))]
        dy, dx = self.rng.integers(-self.jitter, self.jitter + 1, size=2)
        return int(i), int(y + dy), int(x + dx)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch: ``(B, 1, P, P)`` float32 images and ``(B, P, P)`` int64 labels."""
        xs, ys = [], []
        for _ in range(batch_size):
            i, cy, cx = self.centre()
            y0, x0 = cy - self.crop // 2 + self.pad, cx - self.crop // 2 + self.pad
            window = (slice(y0, y0 + self.crop), slice(x0, x0 + self.crop))
            img, lab = self.images[i][window], self.labels[i][window]
            k = int(self.rng.integers(4))
            img, lab = np.rot90(img, k), np.rot90(lab, k)
            if self.rng.integers(2):
                img, lab = img[:, ::-1], lab[:, ::-1]
            xs.append(np.ascontiguousarray(img))
            ys.append(np.ascontiguousarray(lab))
        x = torch.from_numpy(np.stack(xs)[:, None])
        y = torch.from_numpy(np.stack(ys).astype(np.int64))
        return x, y


class UNetBaseline:
    """MONAI U-Net trained with masked cross-entropy on sparse (or dense) labels; see the module docstring.

    Args:
        num_classes: number of classes ``C`` (labels ``1..C``).
        dense: train on dense labels with crop centres uniform over the images (upper-bound mode); the labels
            given to :meth:`fit` must then have no unlabelled (``0``) pixel.
        time_budget_s: wall-clock seconds of training loop; ``None`` for no time limit.
        max_steps: maximum number of optimiser steps; ``None`` for no step limit.
        seed: seed of the crop sampler and of torch's global RNG (network initialisation).
        channels: U-Net feature channels per level.
        strides: U-Net down-sampling strides (``crop_size`` and ``roi_size`` must be multiples of their product).
        num_res_units: residual units per U-Net block.
        crop_size: side of the square training crops.
        batch_size: crops per step.
        lr: Adam learning rate.
        jitter: maximum shift of a sparse crop centre from its labelled pixel; ``None`` for ``crop_size // 4``.
        roi_size: side of the sliding windows at prediction.
        overlap: overlap of the sliding windows.
        sw_batch_size: windows per forward pass at prediction.
        device: torch device; ``None`` for CUDA when available, else the CPU.
    """

    def __init__(
        self,
        num_classes: int,
        dense: bool = False,
        time_budget_s: float | None = 1800.0,
        max_steps: int | None = None,
        seed: int = 0,
        channels: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 2,
        crop_size: int = 128,
        batch_size: int = 8,
        lr: float = 1e-3,
        jitter: int | None = None,
        roi_size: int = 256,
        overlap: float = 0.25,
        sw_batch_size: int = 4,
        device: str | torch.device | None = None,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        if time_budget_s is None and max_steps is None:
            raise ValueError("set time_budget_s or max_steps (or both), otherwise training never stops.")
        if len(channels) != len(strides) + 1:
            raise ValueError(f"{len(channels)} channels need {len(channels) - 1} strides, got {len(strides)}.")
        factor = int(np.prod(strides))
        for name, size in (("crop_size", crop_size), ("roi_size", roi_size)):
            if size % factor:
                raise ValueError(f"{name}={size} must be a multiple of the total stride {factor}.")
        self.num_classes = num_classes
        self.dense = dense
        self.time_budget_s = time_budget_s
        self.max_steps = max_steps
        self.seed = seed
        self.channels = tuple(channels)
        self.strides = tuple(strides)
        self.num_res_units = num_res_units
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.lr = lr
        self.jitter = crop_size // 4 if jitter is None else jitter
        if not 0 <= self.jitter < crop_size // 2:
            raise ValueError(f"jitter must be in [0, crop_size // 2), got {self.jitter}.")
        self.roi_size = roi_size
        self.overlap = overlap
        self.sw_batch_size = sw_batch_size
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net: UNet | None = None
        self.mean = 0.0
        self.std = 1.0
        self.steps = 0
        self.train_seconds = 0.0
        self.losses: list[float] = []
        #: weights at elapsed training times (``fit(snapshot_times=...)``), keyed by the time in seconds
        self.snapshots: dict[float, dict[str, torch.Tensor]] = {}

    def _build(self) -> UNet:
        return UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=self.num_classes,
            channels=self.channels,
            strides=self.strides,
            num_res_units=self.num_res_units,
        )

    def _check(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> None:
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"need matching, non-empty images and labels, got {len(images)} and {len(labels)}.")
        for image, lab in zip(images, labels):
            if np.ndim(image) != 2 or np.shape(image) != np.shape(lab):
                raise ValueError(f"need 2D images with same-shape labels, got {np.shape(image)}, {np.shape(lab)}.")
            lab = np.asarray(lab)
            if lab.min() < 0 or lab.max() > self.num_classes:
                raise ValueError(f"labels must be in 0..{self.num_classes}, found {lab.min()}..{lab.max()}.")
            if self.dense and (lab == 0).any():
                raise ValueError("dense=True needs every pixel labelled, but some labels are 0.")
        if not self.dense and not any((np.asarray(lab) > 0).any() for lab in labels):
            raise ValueError("no labelled pixel (all labels are 0).")

    def fit(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        snapshot_times: Sequence[float] = (),
    ) -> UNetBaseline:
        """Train a new network from scratch.

        Args:
            images: ``(H, W)`` training images (a stacked ``(N, H, W)`` array or a sequence; sizes may differ).
            labels: matching label maps: sparse (``0`` unlabelled, ``1..C``) or, with ``dense=True``, ``1..C``.
            snapshot_times: elapsed training seconds at which to keep a copy of the weights (in
                :attr:`snapshots`; predict with :meth:`predict`'s ``snapshot``). The schedule does not depend on
                the budget (constant learning rate), so the snapshot at ``t`` is the network a run with
                ``time_budget_s=t`` ends with (the same seed gives the same steps). Times beyond the end of
                training get the final weights.

        Returns:
            ``self``, with ``steps``, ``train_seconds`` (training loop wall-clock time) and ``losses`` (per step).
        """
        self._check(images, labels)
        imgs = [np.asarray(im, dtype=np.float32) for im in images]
        n = sum(im.size for im in imgs)
        self.mean = float(sum(im.sum(dtype=np.float64) for im in imgs) / n)
        var = sum(((im.astype(np.float64) - self.mean) ** 2).sum() for im in imgs) / n
        self.std = float(np.sqrt(var)) or 1.0
        imgs = [(im - np.float32(self.mean)) / np.float32(self.std) for im in imgs]

        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        sampler = _CropSampler(imgs, [np.asarray(lab) for lab in labels], self.crop_size, self.dense, self.jitter, rng)
        net = self._build().to(self.device)
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        self.net, self.steps, self.losses = net, 0, []

        pending = sorted(float(t) for t in snapshot_times)
        self.snapshots = {}

        def snapshot(upto: float) -> None:
            while pending and pending[0] <= upto:
                self.snapshots[pending.pop(0)] = {k: v.detach().clone() for k, v in net.state_dict().items()}

        start = time.perf_counter()
        while self.max_steps is None or self.steps < self.max_steps:
            elapsed = time.perf_counter() - start
            snapshot(elapsed)
            if self.time_budget_s is not None and elapsed >= self.time_budget_s:
                break
            x, y = sampler.sample(self.batch_size)
            loss = masked_cross_entropy(net(x.to(self.device)), y.to(self.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.steps += 1
            self.losses.append(float(loss.detach()))
        self.train_seconds = time.perf_counter() - start
        snapshot(float("inf"))
        net.eval()
        return self

    @torch.inference_mode()
    def predict(self, image: np.ndarray, snapshot: float | None = None) -> np.ndarray:
        """Class id of every pixel of one ``(H, W)`` image.

        Args:
            image: the raw image.
            snapshot: predict with the weights kept at this elapsed time (a key of :attr:`snapshots`) instead of
                the final ones.

        Returns:
            ``(H, W)`` int64 map of class ids ``1..C``.
        """
        if self.net is None:
            raise RuntimeError("call fit() before predict().")
        if snapshot is not None:
            if snapshot not in self.snapshots:
                raise KeyError(f"no snapshot at {snapshot} s; kept: {sorted(self.snapshots)}.")
            final = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.net.load_state_dict(self.snapshots[snapshot])
            try:
                return self.predict(image)
            finally:
                self.net.load_state_dict(final)
        img = (np.asarray(image, dtype=np.float32) - np.float32(self.mean)) / np.float32(self.std)
        if img.ndim != 2:
            raise ValueError(f"expected a 2D image, got shape {img.shape}.")
        h, w = img.shape
        pad = ((0, max(0, self.roi_size - h)), (0, max(0, self.roi_size - w)))
        img = np.pad(img, pad, mode="reflect")
        inferer = SlidingWindowInferer(
            roi_size=self.roi_size,
            sw_batch_size=self.sw_batch_size,
            overlap=self.overlap,
            mode="gaussian",
            sw_device=self.device,
            device=self.device,
        )
        self.net.eval()
        logits = inferer(torch.from_numpy(img)[None, None].to(self.device), self.net)
        pred = logits[0].argmax(0)[:h, :w] + 1
        return pred.cpu().numpy().astype(np.int64)
