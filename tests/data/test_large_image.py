"""Out-of-core prediction: lazy TIFF / OME-Zarr input, tile-by-tile TIFF / OME-Zarr output, equal to in-memory."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from epsseg_monai.data.large_image import (
    PredictionSink,
    create_output,
    large_image_files,
    open_lazy,
    predict_large_images,
)
from epsseg_monai.inferers import DenseInferer
from epsseg_monai.networks import EpsSegHVAE

TINY = {"num_levels": 2, "num_filters": 8, "num_blocks": 1, "latent_channels": 4, "head_hidden": 8}


def net(dims: int) -> EpsSegHVAE:
    torch.manual_seed(0)
    patch = 16 if dims == 2 else 8
    return EpsSegHVAE(
        spatial_dims=dims, in_channels=1, num_classes=3, patch_size=patch, head_window=4 if dims == 2 else 2, **TINY
    ).eval()


def zarr_modules():
    return pytest.importorskip("zarr", reason="zarr is not installed (the [zarr] extra)"), pytest.importorskip(
        "ome_zarr", reason="ome-zarr is not installed (the [zarr] extra)"
    )


def read_output(path) -> np.ndarray:
    if str(path).endswith(".tif"):
        return tifffile.imread(path)
    import zarr

    return np.asarray(zarr.open_group(str(path), mode="r")["0"][...])


def test_open_lazy_tiff_is_memory_mapped(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (30, 34), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", image)
    lazy = open_lazy(tmp_path / "a.tif", 2)
    assert lazy.shape == (1, 30, 34)
    assert isinstance(lazy.array, np.memmap)
    np.testing.assert_array_equal(lazy[:, 3:9, 5:7], image[None, 3:9, 5:7])
    np.testing.assert_array_equal(np.asarray(lazy), image[None])


def test_open_lazy_compressed_tiff_and_ome_zarr(tmp_path):
    zarr, _ = zarr_modules()
    image = np.random.default_rng(0).integers(0, 255, (30, 34), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "lzw.tif", image, compression="lzw", rowsperstrip=8)
    lazy = open_lazy(tmp_path / "lzw.tif", 2)
    assert not isinstance(lazy.array, np.ndarray)
    np.testing.assert_array_equal(lazy[:, 10:20, :], image[None, 10:20])
    # an OME-Zarr image with the NGFF axes t, c, y, x (unit t and c are dropped)
    out = create_output(tmp_path / "img.ome.zarr", (1, 1, 30, 34), np.uint8, "tcyx")
    out[...] = image[None, None]
    lazy = open_lazy(tmp_path / "img.ome.zarr", 2)
    assert lazy.shape == (1, 30, 34)
    np.testing.assert_array_equal(lazy[:, 4:8, 2:30], image[None, 4:8, 2:30])


def test_open_lazy_names_the_file_and_the_fix(tmp_path):
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((3, 4, 20, 20), np.uint8))
    with pytest.raises(ValueError, match=r"v.tif has shape \(3, 4, 20, 20\); this model takes 2D"):
        open_lazy(tmp_path / "v.tif", 2)
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((3, 20, 20), np.uint8))
    with pytest.raises(ValueError, match="3 channel"):
        open_lazy(tmp_path / "c.tif", 2)
    with pytest.raises(FileNotFoundError, match="missing.tif does not exist"):
        open_lazy(tmp_path / "missing.tif", 2)
    assert large_image_files(tmp_path / "c.tif") == [tmp_path / "c.tif"]  # one image instead of a folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No .tif"):
        large_image_files(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="point --input_dir"):
        large_image_files(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt is not a .tif"):
        large_image_files(tmp_path / "notes.txt")


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("fmt", ["tif", "ome.zarr"])
def test_prediction_out_of_core_equals_in_memory(tmp_path, dims, fmt):
    if fmt == "ome.zarr":
        zarr_modules()
    shape = (37, 41) if dims == 2 else (11, 13, 12)
    image = np.random.default_rng(1).normal(100, 20, shape).astype(np.float32)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "big.tif", image)
    network, stats = net(dims), {"mean": [100.0], "std": [20.0]}
    with torch.no_grad():
        expected = DenseInferer()(torch.from_numpy((image - 100) / 20)[None, None], network)[0].numpy()
    written = predict_large_images(
        large_image_files(tmp_path / "in"), network, DenseInferer(tile_size=9 if dims == 2 else 5), stats,
        tmp_path / "out", output_format=fmt, save_probabilities=True, save_uncertainty=True,
    )  # fmt: skip
    assert written == [tmp_path.resolve() / "out" / f"big.{fmt}"]
    np.testing.assert_array_equal(read_output(written[0]), expected.argmax(0) + 1)
    probs = read_output(tmp_path / "out" / f"big_prob.{fmt}")
    if fmt == "tif" and dims == 3:  # ImageJ's Z, C, Y, X, as inference.json writes them
        probs = np.moveaxis(probs, 1, 0)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    p = np.clip(expected, 1e-12, 1)
    entropy = -(expected * np.log(p)).sum(0) / np.log(3)
    np.testing.assert_allclose(read_output(tmp_path / "out" / f"big_entropy.{fmt}"), entropy, atol=1e-5)
    if fmt == "ome.zarr":  # OME-NGFF metadata: a multiscales image whose axes are named
        import zarr

        attrs = dict(zarr.open_group(str(written[0]), mode="r").attrs)
        multiscales = attrs.get("multiscales") or attrs["ome"]["multiscales"]
        assert [a["name"] for a in multiscales[0]["axes"]] == list("zyx"[3 - dims :])


def test_prediction_refuses_to_overwrite_or_write_into_the_inputs(tmp_path):
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", np.zeros((20, 20), np.uint8))
    tifffile.imwrite(tmp_path / "in" / "b.tif", np.ones((20, 20), np.uint8))
    files, network, stats = large_image_files(tmp_path / "in"), net(2), {"mean": [0.0], "std": [1.0]}
    with pytest.raises(FileExistsError, match="folder of the input"):
        predict_large_images(files, network, DenseInferer(tile_size=8), stats, tmp_path / "in", output_format="tif")
    with pytest.raises(ValueError, match="needs a tile size"):
        predict_large_images(files, network, DenseInferer(), stats, tmp_path / "out", output_format="tif")
    (tmp_path / "out").mkdir()
    tifffile.imwrite(tmp_path / "out" / "b.tif", np.full((2, 2), 7, np.uint8))
    with pytest.raises(FileExistsError, match="b.tif already exists"):
        predict_large_images(files, network, DenseInferer(tile_size=8), stats, tmp_path / "out", output_format="tif")
    assert not (tmp_path / "out" / "a.tif").exists()  # refused before anything was predicted
    assert tifffile.imread(tmp_path / "out" / "b.tif").max() == 7
    predict_large_images(files, network, DenseInferer(tile_size=8), stats, tmp_path / "out", "tif", overwrite=True)
    assert tifffile.imread(tmp_path / "out" / "b.tif").shape == (20, 20)


def test_sink_writes_labels_from_probability_tiles():
    labels = np.zeros((4, 6), np.uint8)
    sink = PredictionSink(labels, 3)
    assert sink.shape == (3, 4, 6)
    tile = np.zeros((3, 4, 3), np.float32)
    tile[2] = 1.0
    sink[(slice(None), slice(0, 4), slice(3, 6))] = tile
    assert (labels[:, 3:] == 3).all() and (labels[:, :3] == 0).all()
