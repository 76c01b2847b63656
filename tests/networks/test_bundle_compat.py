"""The eval-mode network works with MONAI bundle tooling (verify_net_in_out, ckpt_export)."""

from __future__ import annotations

import json

import pytest
import torch

NET = {
    "_target_": "epsseg_monai.networks.nets.eps_seg_hvae.EpsSegHVAE",
    "spatial_dims": 2,
    "in_channels": 1,
    "num_classes": 4,
    "num_filters": 8,
    "num_blocks": 1,
    "latent_channels": 8,
    "patch_size": 32,
    "head_window": 4,
}


def write_bundle_files(tmp_path, spatial_dims):
    net = dict(NET, spatial_dims=spatial_dims)
    if spatial_dims == 3:
        net.update(patch_size=16, head_window=2)
    size = net["patch_size"]
    meta = {
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "num_channels": 1,
                    "spatial_shape": [size] * spatial_dims,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "classes",
                    "num_channels": 4,
                    "spatial_shape": [],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): f"class {i + 1}" for i in range(4)},
                }
            },
        }
    }
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / "config.json").write_text(json.dumps({"network_def": net}))
    return tmp_path / "metadata.json", tmp_path / "config.json"


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_verify_net_in_out(tmp_path, spatial_dims):
    from monai.bundle import verify_net_in_out

    meta, config = write_bundle_files(tmp_path, spatial_dims)
    verify_net_in_out(net_id="network_def", meta_file=str(meta), config_file=str(config), device="cpu")


def test_ckpt_export_traces_the_eval_network(tmp_path):
    from epsseg_monai.networks import EpsSegHVAE

    meta, config = write_bundle_files(tmp_path, 2)
    net = EpsSegHVAE(**{k: v for k, v in NET.items() if k != "_target_"})
    torch.save(net.state_dict(), tmp_path / "model.pt")
    from monai.bundle import ckpt_export  # what ``python -m monai.bundle ckpt_export network_def ...`` calls

    ckpt_export(
        net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(tmp_path / "model.pt"),
        meta_file=str(meta), config_file=str(config), use_trace=True, input_shape=[2, 1, 32, 32],
    )  # fmt: skip
    traced = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(traced(x), net.eval()(x))
