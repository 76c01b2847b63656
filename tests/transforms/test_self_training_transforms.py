"""Tests of ``epsseg_monai.transforms.DensePseudoLabels(d)``: ε-Seg+'s dense pseudo-label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epsseg_monai.inferers import DenseInferer
from epsseg_monai.networks import EpsSegHVAE
from epsseg_monai.transforms import DensePseudoLabels, DensePseudoLabelsd


class FixedInferer:
    """Returns given probabilities (1, C, H, W), and records the network's mode."""

    def __init__(self, probs: torch.Tensor) -> None:
        self.probs = probs
        self.calls = 0

    def __call__(self, x: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        self.calls += 1
        assert x.shape[0] == 1 and x.shape[2:] == self.probs.shape[1:]
        return self.probs[None]


def tiny() -> EpsSegHVAE:
    return EpsSegHVAE(2, 1, 3, num_levels=2, num_filters=8, num_blocks=1, latent_channels=4, patch_size=16,
                      head_window=4)  # fmt: skip


def test_confident_pixels_and_clicks() -> None:
    probs = torch.tensor(
        [[[0.95, 0.5], [0.1, 0.2]], [[0.05, 0.3], [0.85, 0.1]], [[0.0, 0.2], [0.05, 0.7]]]
    )  # (3, 2, 2): classes 1 (0.95), none (0.5 < 0.8), 2 (0.85), none (0.7)
    labeller = DensePseudoLabels(tiny(), FixedInferer(probs), threshold=0.8)
    image = torch.zeros(1, 2, 2)
    assert labeller(image).tolist() == [[[1, 0], [2, 0]]]
    clicks = torch.tensor([[[0, 3], [1, 0]]])
    assert labeller(image, clicks).tolist() == [[[1, 3], [1, 0]]]  # the clicks win
    out = labeller(np.zeros((1, 2, 2), np.float32), clicks.numpy())
    assert isinstance(out, np.ndarray) and out.dtype == np.int64
    with pytest.raises(ValueError, match="must be 1\\[spatial\\]"):
        labeller(image, torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="threshold must be in"):
        DensePseudoLabels(tiny(), FixedInferer(probs), threshold=1.5)


def test_dictionary_version_with_the_dense_inferer() -> None:
    """With the real dense inferer: the map equals the argmax where confident, and the network mode is kept."""
    net = tiny().train()
    image = torch.randn(1, 20, 18)
    clicks = torch.zeros(1, 20, 18, dtype=torch.long)
    clicks[0, 3, 4] = 2
    out = DensePseudoLabelsd("image", net, DenseInferer(), threshold=0.0)({"image": image, "label": clicks})
    assert net.training
    probs = DenseInferer()(image[None], net)[0]
    expected = probs.argmax(0) + 1
    expected[3, 4] = 2
    assert torch.equal(out["pseudo"][0], expected)
    assert torch.equal(out["label"], clicks)  # the clicks are kept as they are
    strict = DensePseudoLabelsd("image", net, DenseInferer(), threshold=1.0, label_key=None)({"image": image})
    assert (strict["pseudo"] == 0).float().mean() > 0.99  # nothing is that confident
