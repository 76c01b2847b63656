"""Tests of ``epsseg_monai.export``: the TorchScript dense predictor of a trained bundle."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from epsseg_monai.data import save_intensity_stats
from epsseg_monai.export import export_torchscript, main
from epsseg_monai.inferers import DenseInferer, DenseSlidingWindowInferer
from epsseg_monai.networks import EpsSegHVAE, save_network_config
from tests.inferers.test_dense import images, network

ARGS = {
    "spatial_dims": 2,
    "in_channels": 1,
    "num_classes": 3,
    "num_levels": 2,
    "num_filters": 8,
    "num_blocks": 1,
    "latent_channels": 4,
    "head_window": 4,
    "patch_size": 16,
    "head_fine_levels": [0, 1],
}


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, EpsSegHVAE]:
    """A bundle folder holding what training writes: model.pt, network.json, intensity_stats.json."""
    net = network(2, head_fine_levels=(0, 1))  # the sizes of ARGS
    models = tmp_path / "bundle" / "models"
    models.mkdir(parents=True)
    torch.save(net.state_dict(), models / "model.pt")
    save_network_config(ARGS, ["a", "b", "c"], models / "network.json")
    save_intensity_stats({"mean": [128.0], "std": [40.0]}, models / "intensity_stats.json")
    return tmp_path / "bundle", net


def test_cli_exports_the_dense_predictor(trained: tuple[Path, EpsSegHVAE], capsys: pytest.CaptureFixture) -> None:
    root, net = trained
    out = root / "models" / "model_dense.ts"
    assert main(["torchscript", "--bundle_root", str(root), "--output", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    extra = {"metadata.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert meta["class_names"] == ["a", "b", "c"] and meta["intensity_stats"]["mean"] == [128.0]
    assert meta["pads"] == [list(p) for p in net.dense_padding()]
    assert meta["receptive_field"] == net.dense_receptive_field()
    for spatial in [(37, 29), (64, 50)]:
        x = images(spatial, batch=1, seed=5)
        assert torch.allclose(module(x), DenseInferer().logits(x, net), atol=1e-4, rtol=1e-4)


def test_valid_export_tiles_in_monai_sliding_window(trained: tuple[Path, EpsSegHVAE]) -> None:
    root, net = trained
    out = export_torchscript(root, root / "valid.ts", valid=True)
    extra = {"metadata.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    halo = meta["receptive_field"]
    x = images((3 * halo, 2 * halo + 5), batch=1)
    inferer = DenseSlidingWindowInferer(roi_size=2 * halo + 10, pads=meta["pads"], receptive_field=halo)
    assert torch.allclose(inferer.logits(x, module), DenseInferer().logits(x, net), atol=1e-4, rtol=1e-4)


def test_refuses_to_replace_and_names_missing_files(
    trained: tuple[Path, EpsSegHVAE], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root, _ = trained
    out = root / "model_dense.ts"
    out.write_bytes(b"user's file")
    assert main(["torchscript", "--bundle_root", str(root), "--output", str(out)]) == 1
    assert "--overwrite true" in capsys.readouterr().err
    assert out.read_bytes() == b"user's file"
    assert main(["torchscript", "--bundle_root", str(root), "--output", str(out), "--overwrite", "true"]) == 0
    assert out.read_bytes() != b"user's file"
    (root / "models" / "intensity_stats.json").unlink()
    assert main(["torchscript", "--bundle_root", str(root), "--output", str(tmp_path / "x.ts")]) == 1
    assert "intensity_stats.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "x.ts").exists()
    empty = tmp_path / "empty"
    (empty / "models").mkdir(parents=True)
    assert main(["torchscript", "--bundle_root", str(empty), "--output", str(tmp_path / "y.ts")]) == 1
    assert "network.json is missing" in capsys.readouterr().err


def test_bioimageio_package_passes_bioimageio_test(trained: tuple[Path, EpsSegHVAE], tmp_path: Path) -> None:
    """The zip is a valid bioimage.io model that bioimageio.core runs and tests; its prediction is DenseInferer's."""
    pytest.importorskip("bioimageio.core", reason="the [bioimageio] extra (bioimageio.core) is not installed")
    import numpy as np
    from bioimageio.core import load_description, test_model

    root, net = trained
    out = tmp_path / "model.zip"
    assert main(["bioimageio", "--bundle_root", str(root), "--output", str(out)]) == 0
    summary = test_model(out)
    assert summary.status == "passed", summary.display() or summary
    descr = load_description(out)
    assert [str(c) for c in descr.outputs[0].axes[1].channel_names] == ["a", "b", "c"]
    assert "2510.18637" in str(descr.cite[0].doi)
    # a raw image through bioimageio.core (its preprocessing, in one piece and tiled with the declared halo): equal
    # to DenseInferer one halo away from the image border; within it bioimageio.core's reflect padding of the input
    # is the context (DenseInferer: reflection by the patch extent, zero-padded features beyond)
    from bioimageio.core import predict

    with zipfile.ZipFile(out) as z:
        raw = np.load(io.BytesIO(z.read("test_input.npy")))
    expected = DenseInferer()(torch.from_numpy((raw - 128.0) / 40.0), net).numpy()
    halo = descr.outputs[0].axes[2].halo
    inner = (slice(None), slice(None), slice(halo, -halo), slice(halo, -halo))
    whole = None
    for block in (None, 2 * halo):  # whole image; blocks of 4 halo + 2 px, each keeping its 2 halo + 2 interior
        sample = predict(model=descr, inputs={"image": raw}, blocksize_parameter=block)
        probs = np.asarray(sample.members["probabilities"].data)
        assert probs.shape == expected.shape
        assert np.allclose(probs[inner], expected[inner], atol=1e-4)
        assert (probs.argmax(1) == expected.argmax(1)).mean() >= 0.99
        if whole is None:
            whole = probs
        else:  # tiles with the declared halo give the untiled result
            assert np.allclose(probs, whole, atol=1e-4)


@pytest.mark.parametrize("valid", [False, True], ids=["padded", "valid"])
def test_onnx_export_runs_in_onnxruntime_for_any_size(trained: tuple[Path, EpsSegHVAE], valid: bool) -> None:
    """``python -m epsseg_monai.export onnx``: onnxruntime gives the dense pass's logits on sizes it was not
    exported with; the metadata travels in the model."""
    pytest.importorskip("onnx", reason="the [onnx] extra (onnx, onnxruntime) is not installed")
    ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnx, onnxruntime) is not installed")
    import onnx

    root, net = trained
    out = root / "models" / "model_dense.onnx"
    assert main(["onnx", "--bundle_root", str(root), "--output", str(out), "--valid", str(valid).lower()]) == 0
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["epsseg_monai"])
    assert meta["class_names"] == ["a", "b", "c"] and meta["pad_mode"] == (None if valid else "reflect")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for spatial in [(37, 29), (64, 50)]:
        x = images(spatial, batch=2, seed=7)
        (got,) = session.run(["logits"], {"image": x.numpy()})
        with torch.no_grad():
            expected = net.forward_dense(x, pad_mode=None if valid else "reflect")
        assert got.shape == tuple(expected.shape)
        assert torch.allclose(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)
    assert main(["onnx", "--bundle_root", str(root), "--output", str(out)]) == 1, "refuses to overwrite"
