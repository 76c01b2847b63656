"""``val_patch_size``: patch-mode validation with more context than the training patches (closer to the dense map)."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser
from test_bundle_configs import CONFIGS

from epsseg_monai.utils import root_cause


def _patch_inferer(**overrides):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"val_mode": "patch", **overrides})
    return parser.get_parsed_content("validate#inferer")


def test_val_patch_size_defaults_to_the_training_patch_and_can_be_wider() -> None:
    assert _patch_inferer().patch_size == 64
    assert _patch_inferer(patch_size=32).patch_size == 32
    assert _patch_inferer(val_patch_size=128).patch_size == 128


@pytest.mark.parametrize("size", [48, 68, 100])
def test_val_patch_size_must_keep_the_centre_cell(size: int) -> None:
    """Narrower than the training patch, or wider by a difference that is not a multiple of 2**num_levels (8):
    refused before training, naming the option."""
    with pytest.raises(Exception) as info:
        _patch_inferer(val_patch_size=size)
    message = str(root_cause(info.value))
    assert f"val_patch_size={size}" in message and "multiple of 8" in message
