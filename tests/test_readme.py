"""The README's usage example runs as written (on a small random image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_training_example_runs():
    blocks = README.read_text().split("```python\n")
    assert len(blocks) >= 2, "README lost its python example"
    source = blocks[1].split("```")[0]
    rng = np.random.default_rng(0)
    label = np.zeros((1, 96, 96), np.uint8)
    label.flat[rng.choice(96 * 96, 40, replace=False)] = rng.integers(1, 5, 40)
    namespace = {"data": [{"image": rng.standard_normal((1, 96, 96)).astype(np.float32), "label": label}]}
    exec(compile(source, str(README), "exec"), namespace)
    terms = namespace["terms"]
    assert set(terms) == {"loss", "inpainting", "kl", "contrastive", "ce"}
    assert torch.isfinite(terms["loss"])
    assert namespace["net"].head.net[0].weight.grad is not None
