"""Tests of ``epsseg_monai.utils.check_checkpoint``: early, named failures for unusable checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from epsseg_monai.utils import check_checkpoint, check_network_state, load_checkpoint


def net(width: int = 4) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, width, 3), torch.nn.BatchNorm2d(width), torch.nn.Conv2d(width, 2, 1))


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "model.pt"
    with pytest.raises(FileNotFoundError, match=f"Checkpoint {missing} not found"):
        check_checkpoint(missing)
    with pytest.raises(FileNotFoundError, match="not found"):
        check_checkpoint(tmp_path)  # a folder is not a checkpoint file


@pytest.mark.parametrize(
    "content", [np.random.default_rng(0).bytes(512), b"", b"\x00" * 10], ids=["random", "empty", "zeros"]
)
def test_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"Checkpoint {path} cannot be read"):
        check_checkpoint(path, net())


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(net().state_dict(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"Checkpoint {path} cannot be read"):
        check_checkpoint(path)


def test_matching_state_dict_returns_path_string(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(net().state_dict(), path)
    out = check_checkpoint(path, net())
    assert out == str(path) and isinstance(out, str)
    assert check_checkpoint(str(path)) == str(path)  # without a network only readability is checked


def test_model_key_accepted(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    model = net()
    torch.save({"model": model.state_dict(), "optimizer": torch.optim.SGD(model.parameters(), 0.1).state_dict()}, path)
    assert check_checkpoint(path, net()) == str(path)
    # another key name
    torch.save({"network": model.state_dict(), "epoch": 3}, path)
    assert check_checkpoint(path, net(), key="network") == str(path)
    with pytest.raises(ValueError, match="different parameter names"):
        check_checkpoint(path, net())  # under the default key the dict holds no weights


def test_wrong_shape_names_the_parameter(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"model": net(width=8).state_dict()}, path)
    with pytest.raises(ValueError, match=f"Checkpoint {path} was trained with other network sizes: 0.weight is"):
        check_checkpoint(path, net(width=4))


def test_wrong_shape_later_parameter(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    state = net().state_dict()
    state["2.bias"] = torch.zeros(5)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"2\.bias is \(5,\) there but \(2,\) here"):
        check_checkpoint(path, net())


def test_different_parameter_names(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    state = net().state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ValueError, match=f"Checkpoint {path} does not hold the weights of this network"):
        check_checkpoint(path, net())
    torch.save(torch.zeros(3), path)  # not a dict at all
    with pytest.raises(ValueError, match="does not hold the weights"):
        check_checkpoint(path, net())


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    """Only weights are loaded (``weights_only``): a whole pickled module is refused, not executed."""
    path = tmp_path / "model.pt"
    torch.save(net(), path)
    with pytest.raises(ValueError, match="cannot be read"):
        check_checkpoint(path)


def test_check_network_state_of_a_loaded_checkpoint(tmp_path: Path) -> None:
    """A checkpoint read once (``load_checkpoint``) is checked without reading the file again: the state dict comes
    back, from under ``"model"`` too, and a foreign one is refused naming the file."""
    path = tmp_path / "model.pt"
    model = net()
    torch.save({"model": model.state_dict(), "epoch": 2}, path)
    state = check_network_state(load_checkpoint(path), net(), path)
    assert set(state) == set(model.state_dict())
    torch.testing.assert_close(state["0.weight"], model.state_dict()["0.weight"])
    with pytest.raises(ValueError, match=f"Checkpoint {path} was trained with other network sizes"):
        check_network_state(load_checkpoint(path), net(width=8), path)
