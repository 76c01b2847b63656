"""Tests of ``epsseg_monai.engines.self_training``: loading phase-1 weights and keeping the better phase's model."""

from __future__ import annotations

import pytest
import torch

from epsseg_monai.engines import keep_better_model, load_weights
from epsseg_monai.networks import EpsSegHVAE


def tiny() -> EpsSegHVAE:
    return EpsSegHVAE(2, 1, 3, num_levels=2, num_filters=8, num_blocks=1, latent_channels=4, patch_size=16,
                      head_window=4)  # fmt: skip


@pytest.mark.parametrize("wrapped", [False, True], ids=["state-dict", "checkpoint-dict"])
def test_load_weights(tmp_path, wrapped: bool) -> None:
    source, target = tiny(), tiny()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    state = source.state_dict()
    torch.save({"model": state, "optimizer": {}} if wrapped else state, tmp_path / "w.pt")
    load_weights(target, tmp_path / "w.pt")
    for a, b in zip(source.state_dict().values(), target.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_weights(target, tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "first, second, kept",
    [
        (0.8, 0.85, "second"),
        (0.8, 0.8, "first"),
        (0.8, 0.7, "first"),
        (0.8, float("nan"), "first"),
        (None, 0.5, "second"),
        (0.8, None, "first"),
    ],  # fmt: skip
)
def test_keep_better_model(tmp_path, first, second, kept) -> None:
    best, phase1 = tmp_path / "model.pt", tmp_path / "model_supervised.pt"
    best.write_bytes(b"second phase")
    phase1.write_bytes(b"first phase")
    assert keep_better_model(best, phase1, first, second) == kept
    assert best.read_bytes() == (b"second phase" if kept == "second" else b"first phase")
    assert phase1.read_bytes() == b"first phase"
