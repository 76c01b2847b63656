"""Integration: sampler -> mask -> network -> EpsSegLoss; a tiny model overfits a handful of labelled patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose

from epsseg_monai.losses import EpsSegLoss
from epsseg_monai.networks import EpsSegHVAE
from epsseg_monai.transforms import CenterRegionMaskd, RandSparseLabelPatchd


def toy_image(spatial_dims: int, size: int, seed: int = 0):
    """Three classes told apart by intensity and texture, a few labelled points each."""
    rng = np.random.default_rng(seed)
    shape = (size,) * spatial_dims
    classes = np.ones(shape, dtype=np.uint8)
    coords = np.indices(shape)
    classes[coords[-1] >= size // 3] = 2
    classes[coords[-1] >= 2 * size // 3] = 3
    image = np.choose(classes - 1, [0.0, 1.0, -1.0]) + np.choose(classes - 1, [0.1, 0.5, 0.1]) * rng.standard_normal(
        shape
    )
    sparse = np.zeros(shape, dtype=np.uint8)
    for c in (1, 2, 3):
        where = np.flatnonzero(classes == c)
        sparse.flat[rng.choice(where, 4, replace=False)] = c
    return image[None].astype(np.float32), sparse[None]


@pytest.mark.parametrize("spatial_dims, size, patch, window", [(2, 48, 16, 2), (3, 32, 16, 2)])
def test_tiny_model_overfits_labelled_patches(spatial_dims, size, patch, window):
    image, sparse = toy_image(spatial_dims, size)
    transform = Compose(
        [
            RandSparseLabelPatchd(["image"], label_key="label", patch_size=patch, num_samples=12),
            CenterRegionMaskd("image", mask_size=1, unmasked_keys="target"),
        ]
    )
    loader = DataLoader(Dataset([{"image": image, "label": sparse}], transform), batch_size=1, num_workers=0)
    net = EpsSegHVAE(
        spatial_dims,
        1,
        3,
        num_filters=16,
        num_blocks=1,
        latent_channels=6,
        patch_size=patch,
        head_window=window,
        dropout=0.0,
    )
    loss_fn = EpsSegLoss(margin=5.0)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses, ces = [], []
    for _ in range(60):
        batch = next(iter(loader))
        terms = loss_fn(net(batch["image"]), batch["target"], batch["class"])
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"]))
        ces.append(float(terms["ce"]))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert np.mean(ces[-5:]) < 0.5 * np.mean(ces[:5])
    # every labelled pixel is classified correctly afterwards
    net.eval()
    sampler = RandSparseLabelPatchd(["image"], "label", patch, num_samples=12)
    batch = next(iter(DataLoader(Dataset([{"image": image, "label": sparse}], sampler), batch_size=1)))
    with torch.no_grad():
        predicted = net(batch["image"]).argmax(1) + 1
    assert torch.equal(predicted, batch["class"])
