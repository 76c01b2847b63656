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


def test_falls_back_to_the_final_weights_when_never_validated(tmp_path, caplog):
    """A phase 1 stopped (``--time_limit``) before its first validation hands its final weights over."""
    final = tmp_path / "model_last.pt"
    final.write_bytes(b"final")
    with caplog.at_level("WARNING"):
        kept = keep_supervised_model(tmp_path / "model.pt", tmp_path / "model_supervised.pt", final)
    assert (tmp_path / "model_supervised.pt").read_bytes() == b"final" and final.is_file()
    assert kept == str(tmp_path / "model_supervised.pt")
    assert "never validated" in caplog.text
    best = tmp_path / "model.pt"
    best.write_bytes(b"best")  # a best model, when there is one, wins over the final weights
    keep_supervised_model(best, tmp_path / "model_supervised.pt", final)
    assert (tmp_path / "model_supervised.pt").read_bytes() == b"best"


def test_missing_best_and_final_model_says_why(tmp_path):
    with pytest.raises(FileNotFoundError, match="validate at least once"):
        keep_supervised_model(tmp_path / "model.pt", tmp_path / "model_supervised.pt", tmp_path / "model_last.pt")
