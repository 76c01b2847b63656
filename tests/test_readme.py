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


def test_ci_runs_the_readme_test_command_and_installs_keep_a_users_torch():
    """``.ci/run`` is the README's test command; fresh-machine commands pin torch through ``constraints.txt``
    while the package itself only sets a lower bound (installing it never downgrades a user's torch)."""
    import configparser

    root = README.parent
    commands = [line for line in README.read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2 and all("-c constraints.txt" in c for c in commands), commands
    ci = [line for line in (root / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert ci == [commands[1]]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    torch_req = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip().startswith("torch")]
    assert torch_req == ["torch>=2.1"], torch_req
    pins = [line for line in (root / "constraints.txt").read_text().splitlines() if line.startswith("torch")]
    assert pins == ["torch==2.13.0"]
