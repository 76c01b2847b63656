"""Tests of ``keep_supervised_model``: the hand-over from the supervised to the semi-supervised phase."""

from __future__ import annotations

import pytest

from epsseg_monai.engines import keep_supervised_model


def test_copies_the_best_model(tmp_path):
    best = tmp_path / "model.pt"
    best.write_bytes(b"weights")
    kept = keep_supervised_model(best, tmp_path / "model_supervised.pt")
    assert kept == str(tmp_path / "model_supervised.pt")
    assert (tmp_path / "model_supervised.pt").read_bytes() == b"weights" and best.is_file()


def test_missing_best_model_says_why(tmp_path):
    with pytest.raises(FileNotFoundError, match="validate at least once"):
        keep_supervised_model(tmp_path / "model.pt", tmp_path / "model_supervised.pt")
