from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

#: Benchmark data (never committed): ../shared/data from the project root, or $EPSSEG_DATA_DIR.
DATA_DIR = Path(os.environ.get("EPSSEG_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(
            f"benchmark data not found at {DATA_DIR}; set EPSSEG_DATA_DIR to the folder holding vnc/ and nih3t3/"
        )
    return DATA_DIR


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
