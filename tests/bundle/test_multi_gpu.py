"""``torchrun`` data-parallel training and sharded inference through the zoo-style overlays
``multi_gpu_train.json`` / ``multi_gpu_inference.json``, on CPU with the ``gloo`` backend (2 processes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile
import torch.distributed as dist
from test_bundle_configs import CONFIGS, TINY_2D, bundle, check, make_dataset, overrides

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")

COMMON = {"num_classes": 3, "class_names": ["x", "y", "z"], **TINY_2D, "epoch_length": 4, "num_threads": 1}


def torchrun(run_id: str, configs: list[str], cwd: Path, nproc: int = 2, **values) -> subprocess.CompletedProcess:
    files = json.dumps([str(CONFIGS / c) for c in configs])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "monai.bundle", "run", run_id, "--config_file", files,
           "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd + overrides(values), cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def train_losses(log: str) -> list[float]:
    return [float(v) for v in re.findall(r"train_loss: ([0-9.]+)", log)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One epoch on one process (batch 8) and on two (batch 4 each: the same global batch), the two-process run
    with the semi-supervised overlay after it (one epoch)."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = make_dataset(tmp / "data", (40, 44))
    single = check(bundle("training", "train.json", tmp, dataset_dir=str(data), bundle_root=str(tmp / "one"),
                          **COMMON, epochs=1, batch_size=8))  # fmt: skip
    result = torchrun("training", ["train.json", "multi_gpu_train.json", "semi_supervised.json"], tmp,
                      dataset_dir=str(data), bundle_root=str(tmp / "two"), **COMMON, epochs=1, batch_size=4,
                      semi_supervised_epochs=1, num_neighbours=3)  # fmt: skip
    return {"tmp": tmp, "data": data, "single": single, "ddp": check(result)}


def test_two_process_training_writes_once_and_matches_one_process(runs):
    models = runs["tmp"] / "two" / "models"
    assert sorted(p.name for p in models.glob("*checkpoint_epoch=*.pt")) == [
        "checkpoint_epoch=1.pt",
        "semi_supervised_checkpoint_epoch=1.pt",
    ]
    for name in ("model.pt", "model_last.pt", "model_supervised.pt", "network.json", "intensity_stats.json"):
        assert (models / name).is_file(), name
    assert not list(models.glob("*.tmp")) and not list(models.glob(".*.tmp"))
    events = list((runs["tmp"] / "two" / "eval" / "runs").glob("events.out.tfevents*"))
    assert len(events) == 4, "TensorBoard on rank 0 only: phase 1's and phase 2's trainer and evaluator"
    # the epoch's mean loss of 2 processes x batch 4 agrees with 1 process x batch 8 (same initial weights,
    # other random patches)
    (one,) = train_losses(runs["single"])
    two = train_losses(runs["ddp"])
    assert len(two) == 2, "rank 0 logs phase 1 and phase 2 once each"
    assert abs(two[0] - one) <= 0.25 * one, (one, two)
    assert runs["ddp"].count("Metrics -- val_mean_dice:") == 2, "validation logged once per epoch"


def test_two_process_inference_writes_each_output_once(runs, tmp_path):
    tmp, data = runs["tmp"], runs["data"]
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):  # 3 images over 2 ranks: 2 and 1
        (images / f"im{i}.tif").write_bytes((data / "images" / ("a.tif" if i % 2 else "b.tif")).read_bytes())
    root = str(tmp / "two")
    check(bundle("inference", "inference.json", tmp_path, bundle_root=root, dataset_dir=str(images),
                 output_dir=str(tmp_path / "one")))  # fmt: skip
    log = check(torchrun("inference", ["inference.json", "multi_gpu_inference.json"], tmp_path, bundle_root=root,
                         dataset_dir=str(images), output_dir=str(tmp_path / "two"), num_threads=1))  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["im0.tif", "im1.tif", "im2.tif"]
    for i in range(3):
        one, two = (tifffile.imread(tmp_path / d / f"im{i}.tif") for d in ("one", "two"))
        assert (one == two).all(), f"im{i}.tif differs from the one-process prediction"
    # a second run without --overwrite is refused on every rank before anything is predicted
    result = torchrun("inference", ["inference.json", "multi_gpu_inference.json"], tmp_path, bundle_root=root,
                      dataset_dir=str(images), output_dir=str(tmp_path / "two"))  # fmt: skip
    assert result.returncode != 0 and "--overwrite true" in result.stdout + result.stderr
    assert "Traceback" not in log


@pytest.mark.parametrize("fmt", ["tif", "ome.zarr"])
def test_two_process_large_image_inference_shares_the_tiles(runs, tmp_path, fmt):
    """``large_image_inference.json`` after ``multi_gpu_inference.json``: the ranks share the tiles of one image and
    write them into the same outputs, equal to one process's; rank 0 alone creates the outputs, and an existing
    output is refused on every rank."""
    if fmt == "ome.zarr":
        pytest.importorskip("zarr", reason="zarr is not installed (the [zarr] extra)")
        pytest.importorskip("ome_zarr", reason="ome-zarr is not installed (the [zarr] extra)")
    images = tmp_path / "in"
    images.mkdir()
    (images / "big.tif").write_bytes((runs["data"] / "images" / "a.tif").read_bytes())  # 40 x 44: 3 x 3 tiles
    common = dict(
        bundle_root=str(runs["tmp"] / "two"),
        dataset_dir=str(images),
        output_format=fmt,
        tile_size=[16, 16],
        save_probabilities=True,
        save_uncertainty=True,
        amp=False,
        num_threads=1,
    )
    check(bundle("inference", ["inference.json", "large_image_inference.json"], tmp_path,
                 output_dir=str(tmp_path / "one"), **common))  # fmt: skip
    configs = ["inference.json", "multi_gpu_inference.json", "large_image_inference.json"]
    log = check(torchrun("inference", configs, tmp_path, output_dir=str(tmp_path / "two"), **common))
    assert "on 2 processes" in log and "Traceback" not in log
    ext = "." + fmt
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(f"big{s}{ext}" for s in ("", "_prob", "_entropy"))
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == names
    for name in names:
        if fmt == "tif":
            one, two = (tifffile.imread(tmp_path / d / name) for d in ("one", "two"))
        else:
            import zarr

            one, two = (zarr.open_group(str(tmp_path / d / name), mode="r")["0"][...] for d in ("one", "two"))
        assert one.shape[-2:] == (40, 44)
        assert (one == two).all(), f"{name} differs from the one-process prediction"
    result = torchrun("inference", configs, tmp_path, output_dir=str(tmp_path / "two"), **common)
    assert result.returncode != 0 and "--overwrite true" in result.stdout + result.stderr


def test_two_process_evaluation_equals_one_process(runs, tmp_path):
    """``multi_gpu_evaluate.json``: each rank scores its share of the images, rank 0 writes the same report as one
    process."""
    tmp, data = runs["tmp"], runs["data"]
    root, preds, labels = str(tmp / "two"), tmp_path / "preds", str(data / "ground_truth")
    check(bundle("inference", "inference.json", tmp_path, bundle_root=root, dataset_dir=str(data / "images"),
                 output_dir=str(preds)))  # fmt: skip
    check(bundle("evaluate", "evaluate.json", tmp_path, bundle_root=root, pred_dir=str(preds), label_dir=labels,
                 output_dir=str(tmp_path / "one")))  # fmt: skip
    log = check(torchrun("evaluate", ["evaluate.json", "multi_gpu_evaluate.json"], tmp_path, bundle_root=root,
                         pred_dir=str(preds), label_dir=labels, output_dir=str(tmp_path / "two")))  # fmt: skip
    one, two = (json.loads((tmp_path / d / "dice.json").read_text()) for d in ("one", "two"))
    assert sorted(two["per_image"]) == ["a", "b"] and two["overall"] == one["overall"]
    assert two["per_image"] == one["per_image"]
    assert (tmp_path / "two" / "dice.csv").read_text() == (tmp_path / "one" / "dice.csv").read_text()
    assert log.count("mean Dice") == 1, "rank 0 alone logs and writes the report"
