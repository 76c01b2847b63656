"""Each bundle config runs through ``python -m monai.bundle`` on tiny 2D and 3D data, end to end."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from forked_cli import run_module

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"

#: a tiny network and short schedule; every size is a command-line override of the shipped configs
TINY = {
    "num_levels": 2, "num_filters": 8, "num_blocks": 1, "latent_channels": 4, "head_hidden": 8,
}  # fmt: skip
TINY_2D = {**TINY, "patch_size": 16, "head_window": 4}
TINY_3D = {**TINY, "spatial_dims": 3, "patch_size": 8, "head_window": 2}
SCHEDULE = {"epochs": 2, "epoch_length": 3, "batch_size": 8}


def overrides(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in (f"--{k}", json.dumps(v) if isinstance(v, (list, dict)) else str(v))]


def bundle(run_id: str, config: str | list[str], cwd: Path, **values) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run RUN_ID`` with a shipped config (or a list: a config and its overlays)."""
    files = json.dumps([str(CONFIGS / c) for c in config]) if isinstance(config, list) else str(CONFIGS / config)
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", files]
    cmd += ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    return cli(cmd + overrides(values), cwd=cwd)


def cli(cmd: list[str], cwd: Path | str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)`` for ``cmd = [sys.executable, "-m", MODULE,
    *ARGS]``, in a child forked from a process that imported torch and MONAI once (``forked_cli``)."""
    assert cmd[:2] == [sys.executable, "-m"], cmd[:2]
    return run_module(cmd[2], cmd[3:], cwd=cwd, timeout=timeout)


def check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def make_dataset(root: Path, shape: tuple[int, ...], num_classes: int = 3, points: int = 12) -> Path:
    """Blobs of 3 classes with class-dependent intensity, sparse points, dense ground truth for val."""
    rng = np.random.default_rng(len(shape))
    for part, names in (("", ["a", "b"]), ("val", ["v"])):
        for sub in ("images", "labels", "ground_truth"):
            (root / part / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            dense = np.ones(shape, np.uint8)
            dense[tuple(slice(s // 4, s // 2) for s in shape)] = 2
            dense[tuple(slice(s // 2 + 1, s - 1) for s in shape)] = 3
            image = (dense * 70 + rng.normal(0, 10, shape)).clip(0, 255).astype(np.uint8)
            sparse = np.zeros(shape, np.uint8)
            for c in range(1, num_classes + 1):
                idx = rng.choice(np.flatnonzero(dense == c), points, replace=False)
                sparse.flat[idx] = c
            tifffile.imwrite(root / part / "images" / f"{name}.tif", image)
            tifffile.imwrite(root / part / "labels" / f"{name}.tif", sparse)
            tifffile.imwrite(root / part / "ground_truth" / f"{name}.tif", dense)
    return root


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def trained(request, tmp_path_factory):
    dims = request.param
    tmp = tmp_path_factory.mktemp(f"bundle{dims}d")
    data = make_dataset(tmp / "data", (40, 44) if dims == 2 else (12, 14, 13))
    net = TINY_2D if dims == 2 else TINY_3D
    common = {**net, "bundle_root": str(tmp / "b"), "num_classes": 3, "class_names": ["x", "y", "z"]}
    log = check(bundle("training", "train.json", tmp, dataset_dir=str(data), **common, **SCHEDULE))
    return {"tmp": tmp, "data": data, "common": common, "log": log, "dims": dims}


def test_training_writes_weights_statistics_and_logs(trained):
    models = Path(trained["common"]["bundle_root"]) / "models"
    for name in ("model.pt", "model_last.pt", "intensity_stats.json"):
        assert (models / name).is_file(), name
    assert list(models.glob("checkpoint_*.pt")), "no per-epoch checkpoint with optimizer and trainer state"
    assert set(torch.load(next(models.glob("checkpoint_*.pt")), weights_only=False)) >= {"model", "optimizer"}
    assert "val_mean_dice" in trained["log"] and "val_mean_dice_z" in trained["log"]
    assert "train_inpainting" in trained["log"] and "train_contrastive" in trained["log"]
    assert "\r" not in trained["log"] and "it/s]" not in trained["log"], "progress bars only on a terminal"
    assert list((Path(trained["common"]["bundle_root"]) / "eval" / "runs").glob("events.out.tfevents*"))
    stats = json.loads((models / "intensity_stats.json").read_text())
    images = [tifffile.imread(p).astype(np.float64) for p in sorted((trained["data"] / "images").glob("*.tif"))]
    np.testing.assert_allclose(stats["mean"], [np.mean(images)], rtol=1e-6)


def test_inference_and_evaluate(trained):
    tmp, data, common = trained["tmp"], trained["data"], trained["common"]
    out = tmp / "pred"
    log = check(bundle("inference", "inference.json", tmp, input_dir=str(data / "val" / "images"),
                       output_dir=str(out), save_probabilities=True, **common))  # fmt: skip
    assert "\r" not in log, "progress bars belong on a terminal, not in logs"
    pred = tifffile.imread(out / "v.tif")
    gt = tifffile.imread(data / "val" / "ground_truth" / "v.tif")
    assert pred.shape == gt.shape
    assert pred.min() >= 1 and pred.max() <= 3, "label maps must hold class ids 1..C, never 0"
    probs = tifffile.imread(out / "v_prob.tif")
    assert probs.size == 3 * gt.size
    evaluation = tmp / "evaluation"
    check(bundle("evaluate", "evaluate.json", tmp, pred_dir=str(out), label_dir=str(data / "val" / "ground_truth"),
                 output_dir=str(evaluation), num_classes=3, class_names=["x", "y", "z"]))  # fmt: skip
    report = json.loads((evaluation / "dice.json").read_text())
    assert report["overall"]["pixels"] == gt.size
    assert 0.0 <= report["overall"]["mean"] <= 1.0
    assert (evaluation / "dice.csv").read_text().splitlines()[0] == "image,x,y,z,mean,pixels"


def test_inference_never_replaces_a_users_files(trained, tmp_path):
    """Predicting into the label folder beside the input images is refused (the user's clicks keep their bytes);
    a second run into a folder of earlier predictions is refused until ``--overwrite true``."""
    data, common = trained["data"], trained["common"]
    labels = data / "val" / "labels"
    before = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in labels.iterdir()}
    result = bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                    output_dir=str(labels), overwrite=True, **common)  # fmt: skip
    assert result.returncode != 0 and "Choose another --output_dir" in result.stdout + result.stderr
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in labels.iterdir()} == before
    out = tmp_path / "pred"
    out.mkdir()
    (out / "v.tif").write_bytes(b"an earlier prediction")
    result = bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                    output_dir=str(out), **common)  # fmt: skip
    assert result.returncode != 0 and "--overwrite true" in result.stdout + result.stderr
    assert (out / "v.tif").read_bytes() == b"an earlier prediction"
    check(bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                 output_dir=str(out), overwrite=True, **common))  # fmt: skip
    assert tifffile.imread(out / "v.tif").min() >= 1


def test_ckpt_export_of_trained_weights(trained):
    tmp, common, dims = trained["tmp"], trained["common"], trained["dims"]
    patch = common["patch_size"]
    cmd = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
        "--filepath", str(tmp / "model.ts"), "--ckpt_file", str(Path(common["bundle_root"]) / "models" / "model.pt"),
        "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "inference.json"),
        "--use_trace", "True", "--input_shape", json.dumps([2, 1] + [patch] * dims),
        *overrides({"bundle_root": common["bundle_root"]}),  # the network comes from models/network.json
    ]  # fmt: skip
    check(cli(cmd, cwd=tmp, timeout=300))
    assert torch.jit.load(str(tmp / "model.ts"))(torch.randn(3, 1, *[patch] * dims)).shape == (3, 3)


def test_dense_torchscript_export_of_trained_bundle(trained):
    """``python -m epsseg_monai.export torchscript`` on a trained bundle: the whole-image predictor, any size."""
    from epsseg_monai.export import load_trained_network
    from epsseg_monai.inferers import DenseInferer

    tmp, common, dims = trained["tmp"], trained["common"], trained["dims"]
    out = tmp / "model_dense.ts"
    cmd = [sys.executable, "-m", "epsseg_monai.export", "torchscript", "--bundle_root", common["bundle_root"],
           "--output", str(out), "--overwrite", "true"]  # fmt: skip
    check(cli(cmd, cwd=tmp, timeout=300))
    module = torch.jit.load(str(out))
    net, config = load_trained_network(common["bundle_root"])
    assert config["class_names"] == ["x", "y", "z"]
    for spatial in ([37, 45], [50, 41]) if dims == 2 else ([13, 15, 12],):
        x = torch.randn(1, 1, *spatial)
        assert torch.allclose(module(x), DenseInferer().logits(x, net), atol=1e-4, rtol=1e-4)


def test_inference_refuses_corrupt_checkpoint(trained, tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    result = bundle("inference", "inference.json", tmp_path, input_dir=str(trained["data"] / "val" / "images"),
                    output_dir=str(tmp_path / "pred"), checkpoint=str(bad), **trained["common"])  # fmt: skip
    assert result.returncode != 0
    assert str(bad) in result.stdout + result.stderr and "corrupt" in result.stdout + result.stderr


def test_training_names_the_bad_label_file(tmp_path):
    data = make_dataset(tmp_path / "data", (40, 44))
    bad = data / "labels" / "b.tif"
    labels = tifffile.imread(bad)
    labels[0, 0] = 7
    tifffile.imwrite(bad, labels)
    stats = tmp_path / "b" / "models" / "intensity_stats.json"  # a user's earlier run: must survive a failed one
    stats.parent.mkdir(parents=True)
    stats.write_text('{"mean": [1.0], "std": [2.0]}')
    result = bundle("training", "train.json", tmp_path, dataset_dir=str(data), bundle_root=str(tmp_path / "b"),
                    num_classes=3, class_names=["x", "y", "z"], **TINY_2D, **SCHEDULE)  # fmt: skip
    assert result.returncode != 0
    assert "b.tif" in result.stdout + result.stderr and "num_classes=3" in result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]  # the line a user reads: the cause, not the config wrapper
    assert "b.tif" in last and "num_classes=3" in last, last
    assert stats.read_text() == '{"mean": [1.0], "std": [2.0]}'
    assert sorted(p.name for p in stats.parent.iterdir()) == ["intensity_stats.json"]  # no weights written


def test_training_warns_when_nothing_is_held_out(tmp_path):
    """One click per class and no val/ folder: nothing can be held out; training says so (it used to run with a
    nan validation Dice and a model.pt stuck at epoch 1 without a word)."""
    data = make_dataset(tmp_path / "data", (40, 44), points=1)
    shutil.rmtree(data / "val")
    log = check(bundle("training", "train.json", tmp_path, dataset_dir=str(data), bundle_root=str(tmp_path / "b"),
                       num_classes=3, class_names=["x", "y", "z"], **TINY_2D, **{**SCHEDULE, "epochs": 1}))  # fmt: skip
    assert "No validation point in the held-out 20% of the clicks" in log


def test_seeded_point_split_without_val_folder(tmp_path):
    data = make_dataset(tmp_path / "data", (40, 44))
    import shutil

    shutil.rmtree(data / "val")
    log = check(bundle("training", "train.json", tmp_path, dataset_dir=str(data), bundle_root=str(tmp_path / "b"),
                       num_classes=3, class_names=["x", "y", "z"], val_fraction=0.25, **TINY_2D,
                       **{**SCHEDULE, "epochs": 1}))  # fmt: skip
    assert "val_mean_dice" in log


def test_training_on_every_click_without_validation(tmp_path):
    """``--val_fraction 0``: every click trains, nothing validates; model.pt is the last (averaged) weights, the
    calibration (it needs held-out clicks) is skipped with a warning, and an overlay whose second phase chooses its
    model by validation is refused before anything is written."""
    data = make_dataset(tmp_path / "data", (40, 44))
    shutil.rmtree(data / "val")
    common = {"dataset_dir": str(data), "num_classes": 3, "class_names": ["x", "y", "z"], **TINY_2D, **SCHEDULE,
              "val_fraction": 0, "weight_averaging": 0.9}  # fmt: skip
    log = check(bundle("training", "train.json", tmp_path, bundle_root=str(tmp_path / "b"),
                       calibrate_after_training=True, **common))  # fmt: skip
    assert "val_mean_dice" not in log and "No validation point" not in log
    assert "calibration after training is skipped" in log
    models = tmp_path / "b" / "models"
    assert not (models / "class_priors.json").exists()
    model, last = (torch.load(models / n, weights_only=True) for n in ("model.pt", "model_last.pt"))
    assert int(last["trainer"]["iteration"]) == SCHEDULE["epochs"] * SCHEDULE["epoch_length"]
    average = {k.removeprefix("module."): v for k, v in last["weight_averaging"].items() if k != "n_averaged"}
    assert model.keys() == average.keys()
    assert all(torch.equal(model[k], average[k]) for k in model), "model.pt is not the last averaged weights"
    # the model predicts through inference.json like any other
    check(bundle("inference", "inference.json", tmp_path, bundle_root=str(tmp_path / "b"),
                 input_dir=str(data / "images"), output_dir=str(tmp_path / "pred")))  # fmt: skip
    for name in ("a", "b"):
        assert tifffile.imread(tmp_path / "pred" / f"{name}.tif").shape == (40, 44)
    result = bundle("training", ["train.json", "self_train.json"], tmp_path, bundle_root=str(tmp_path / "st"),
                    **common, **PLUS)  # fmt: skip
    assert result.returncode != 0
    assert "chooses its model by validation" in _last_line(result), _last_line(result)
    assert not (tmp_path / "st").exists()


def test_metadata_is_valid_against_the_model_zoo_schema():
    if not SCHEMA.is_file():
        pytest.skip(f"model zoo schema not found at {SCHEMA} (read from ../shared, never committed)")
    cmd = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"),
           "--filepath", str(SCHEMA)]  # fmt: skip
    out = check(cli(cmd, timeout=300))
    assert "verified with no error" in out


def test_verify_net_in_out_on_shipped_network():
    cmd = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
           "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "inference.json")]  # fmt: skip
    out = check(cli(cmd, cwd=REPO, timeout=300))
    assert "verified with no error" in out


def test_shipped_configs_agree_on_the_network():
    """One source for the model: inference.json restates no network size; train.json's network matches metadata."""
    train = json.loads((CONFIGS / "train.json").read_text())
    infer = json.loads((CONFIGS / "inference.json").read_text())
    for key in ("num_levels", "num_filters", "num_blocks", "latent_channels", "head_window", "head_hidden",
                "head_fine_levels"):  # fmt: skip
        assert key not in infer, key
        assert train["network_args"][key] == f"@{key}"
    meta = json.loads((CONFIGS / "metadata.json").read_text())["network_data_format"]
    assert meta["inputs"]["image"]["spatial_shape"] == [train["patch_size"]] * train["spatial_dims"]
    assert meta["outputs"]["pred"]["num_channels"] == train["num_classes"] == len(train["class_names"])


def test_inference_reads_the_network_from_training(trained, tmp_path):
    """Training writes models/network.json; inference and evaluation need no size flag. Without network.json
    (weights from elsewhere) the shipped default network stands in and misfitting weights are refused by name."""
    data, common = trained["data"], trained["common"]
    models = Path(common["bundle_root"]) / "models"
    saved = json.loads((models / "network.json").read_text())
    assert saved["class_names"] == ["x", "y", "z"]
    assert all(saved["network"][k] == common[k] for k in saved["network"] if k in common)
    assert {"num_filters", "num_blocks", "patch_size"} <= set(saved["network"]) & set(common)
    check(bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                 output_dir=str(tmp_path / "pred"), bundle_root=common["bundle_root"]))  # fmt: skip
    gt = tifffile.imread(data / "val" / "ground_truth" / "v.tif")
    assert tifffile.imread(tmp_path / "pred" / "v.tif").shape == gt.shape
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    (alone / "model.pt").write_bytes((models / "model.pt").read_bytes())
    result = bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                    output_dir=str(tmp_path / "pred2"), bundle_root=common["bundle_root"],
                    checkpoint=str(alone / "model.pt"))  # fmt: skip
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert str(alone / "network.json") in out and "Copy it along with the weights" in out
    assert not (tmp_path / "pred2").exists()


def test_training_resumes_from_a_checkpoint(tmp_path):
    data = make_dataset(tmp_path / "data", (40, 44))
    args = {"dataset_dir": str(data), "bundle_root": str(tmp_path / "b"), "num_classes": 3,
            "class_names": ["x", "y", "z"], **TINY_2D, **SCHEDULE}  # fmt: skip
    check(bundle("training", "train.json", tmp_path, **{**args, "epochs": 1}))
    first = tmp_path / "b" / "models" / "checkpoint_epoch=1.pt"
    assert first.is_file()
    log = check(bundle("training", "train.json", tmp_path, **{**args, "epochs": 2, "resume_from": str(first)}))
    assert "Restored all variables" in log
    assert "Epoch[2] Complete" in log and "Epoch[1] Complete" not in log.split("Restored all variables")[1]
    assert (tmp_path / "b" / "models" / "checkpoint_epoch=2.pt").is_file()


def test_interrupted_training_resumes_without_losing_anything(tmp_path):
    """Ctrl-C leaves the last checkpoint (optimizer, LR scheduler, trainer, time budget, best metric); the resumed
    run keeps model.pt unless a validation beats the best one before the interruption, and spends only the rest
    of its time budget."""
    data = make_dataset(tmp_path / "data", (40, 44))
    models = tmp_path / "b" / "models"
    args = {"dataset_dir": str(data), "bundle_root": str(tmp_path / "b"), "num_classes": 3,
            "class_names": ["x", "y", "z"], **TINY_2D, **SCHEDULE, "epochs": 50,
            "early_stop_patience": 100000}  # fmt: skip
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.json")]
    # Ctrl-C reaches the run even where pytest itself was started in the background (which ignores SIGINT, and a
    # child Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen(cmd + overrides(args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 300

    def second_epoch_saved() -> bool:  # the checkpoint of epoch N replaces that of N - 1: look for any N >= 2
        return any(int(p.stem.split("=")[1]) >= 2 for p in models.glob("checkpoint_epoch=*.pt"))

    while not second_epoch_saved() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "the last checkpoint is" in log, log[-3000:]
    (last,) = models.glob("checkpoint_epoch=*.pt")
    state = torch.load(last, weights_only=False)
    assert {"model", "optimizer", "trainer", "lr_scheduler", "time_budget", "best_model"} <= set(state)
    assert state["trainer"]["iteration"] >= 2 * SCHEDULE["epoch_length"] and (models / "model_last.pt").is_file()
    assert state["best_model"]["best"] > -1 and (models / "model.pt").is_file()
    # the best before the interruption was (say) unbeatable, and 15 s of a 1000 s budget are left
    state["best_model"]["best"] = 2.0
    state["time_budget"]["elapsed"] = 985.0
    torch.save(state, last)
    best_before = hashlib.md5((models / "model.pt").read_bytes()).hexdigest()
    log = check(bundle("training", "train.json", tmp_path, **{**args, "resume_from": str(last), "time_limit": 1000,
                                                             "lr_time_decay": True, "epochs": 100000}))  # fmt: skip
    assert "Restored all variables" in log and "Reached the time limit" in log
    assert "val_mean_dice" in log.split("Restored all variables")[1], "no validation after the resume"
    assert hashlib.md5((models / "model.pt").read_bytes()).hexdigest() == best_before
    (final,) = models.glob("checkpoint_epoch=*.pt")
    resumed = torch.load(final, weights_only=False)
    assert 1000 <= resumed["time_budget"]["elapsed"] < 1100 and resumed["best_model"]["best"] == 2.0
    assert resumed["trainer"]["iteration"] > state["trainer"]["iteration"]


def test_multichannel_images_train_and_predict(tmp_path):
    """Two-channel ImageJ TIFFs (axes CYX): training, then a label map per image of the input's size."""
    data = make_dataset(tmp_path / "data", (40, 44))
    for path in data.rglob("images/*.tif"):
        gray = tifffile.imread(path)
        tifffile.imwrite(path, np.stack([gray, 255 - gray]), imagej=True, metadata={"axes": "CYX"})
    args = {"bundle_root": str(tmp_path / "b"), "num_classes": 3, "class_names": ["x", "y", "z"], "in_channels": 2,
            **TINY_2D}  # fmt: skip
    check(bundle("training", "train.json", tmp_path, dataset_dir=str(data), **args, **{**SCHEDULE, "epochs": 1}))
    stats = json.loads((tmp_path / "b" / "models" / "intensity_stats.json").read_text())
    assert len(stats["mean"]) == 2 and stats["mean"][0] + stats["mean"][1] == pytest.approx(255.0)
    check(bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                 output_dir=str(tmp_path / "pred"), **args))  # fmt: skip
    assert tifffile.imread(tmp_path / "pred" / "v.tif").shape == (40, 44)


def test_tiled_inference_equals_whole_image(trained, tmp_path):
    """``--tile_size`` predicts tile by tile (margins from the receptive field) with the same probabilities."""
    data, common, dims = trained["data"], trained["common"], trained["dims"]
    probs = {}
    for name, tile in (("whole", None), ("tiled", [7] * dims)):
        out = tmp_path / name
        extra = {} if tile is None else {"tile_size": tile}
        check(bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                     output_dir=str(out), save_probabilities=True, amp=False, **extra, **common))  # fmt: skip
        probs[name] = tifffile.imread(out / "v_prob.tif")  # float32: bfloat16 rounding would differ per tile
    np.testing.assert_allclose(probs["tiled"], probs["whole"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["tif", "ome.zarr"])
def test_large_image_inference_equals_inference(trained, tmp_path, fmt):
    """The ``large_image_inference.json`` overlay (lazy input, tile-by-tile output) gives ``inference.json``'s result,
    from an LZW-compressed TIFF too (read chunk by chunk), into a memory-mapped TIFF or an OME-Zarr."""
    pytest.importorskip("zarr", reason="zarr is not installed (the [zarr] extra; the LZW input is read through it)")
    if fmt == "ome.zarr":
        pytest.importorskip("ome_zarr", reason="ome-zarr is not installed (the [zarr] extra)")
    data, common, dims = trained["data"], trained["common"], trained["dims"]
    check(bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                 output_dir=str(tmp_path / "ref"), save_probabilities=True, amp=False, **common))  # fmt: skip
    expected = tifffile.imread(tmp_path / "ref" / "v_prob.tif")  # ImageJ's Z, C, Y, X in 3D
    channels_first = (lambda p: np.moveaxis(p, 1, 0)) if dims == 3 else (lambda p: p)
    (tmp_path / "in").mkdir()
    image = tifffile.imread(data / "val" / "images" / "v.tif")
    tifffile.imwrite(tmp_path / "in" / "v.tif", image)
    tifffile.imwrite(tmp_path / "in" / "w.tif", image, compression="lzw")
    out, configs = tmp_path / "large", ["inference.json", "large_image_inference.json"]
    check(bundle("inference", configs, tmp_path, input_dir=str(tmp_path / "in"), output_dir=str(out),
                 output_format=fmt, tile_size=[7] * dims, save_probabilities=True, amp=False, **common))  # fmt: skip
    for name in ("v", "w"):
        if fmt == "tif":
            labels = tifffile.imread(out / f"{name}.tif")
            probs = channels_first(tifffile.imread(out / f"{name}_prob.tif"))  # the same layout as inference.json's
        else:
            import zarr

            labels = zarr.open_group(str(out / f"{name}.ome.zarr"), mode="r")["0"][...]
            probs = zarr.open_group(str(out / f"{name}_prob.ome.zarr"), mode="r")["0"][...]
        np.testing.assert_allclose(probs, channels_first(expected), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(labels, channels_first(expected).argmax(0) + 1)
    # a second run refuses to replace the predictions
    result = bundle("inference", configs, tmp_path, input_dir=str(tmp_path / "in"), output_dir=str(out),
                    output_format=fmt, tile_size=[7] * dims, **common)  # fmt: skip
    assert result.returncode != 0 and "already exists" in result.stderr.strip().splitlines()[-1]


def test_tta_inference_is_rotation_equivariant(trained, tmp_path):
    """``--tta true`` averages the 8 rotations and flips: a quarter-turned image gets the quarter-turned
    probabilities (exactly, a group property), which the plain dense prediction does not."""
    data, common = trained["data"], trained["common"]
    image = tifffile.imread(data / "val" / "images" / "v.tif")
    inputs = tmp_path / "in"
    inputs.mkdir()
    tifffile.imwrite(inputs / "v.tif", image)
    tifffile.imwrite(inputs / "turned.tif", np.ascontiguousarray(np.rot90(image, 1, axes=(-2, -1))))
    probs = {}
    for tta in (True, False):
        out = tmp_path / f"tta_{tta}"
        check(bundle("inference", "inference.json", tmp_path, input_dir=str(inputs), output_dir=str(out),
                     save_probabilities=True, amp=False, tta=tta, **common))  # fmt: skip
        probs[tta] = [tifffile.imread(out / f"{name}_prob.tif") for name in ("v", "turned")]
    # probabilities are saved channel-first: the spatial axes are the last two
    turn = lambda a: np.rot90(a, 1, axes=(-2, -1))  # noqa: E731
    np.testing.assert_allclose(probs[True][1], turn(probs[True][0]), rtol=0, atol=1e-5)
    assert np.abs(probs[False][1] - turn(probs[False][0])).max() > 1e-3
    assert np.abs(probs[True][0] - probs[False][0]).max() > 1e-3


def test_bfloat16_training_with_time_budget_decay(tmp_path):
    """``--train_amp true --lr_time_decay true --time_limit``: trains in bfloat16 autocast and ends with the
    learning rate decayed below its start (read back from the last checkpoint's optimiser state)."""
    data = make_dataset(tmp_path / "data", (40, 44))
    values = {**TINY_2D, "bundle_root": str(tmp_path / "b"), "num_classes": 3, "class_names": ["x", "y", "z"],
              "epochs": 1000, "epoch_length": 3, "batch_size": 8, "time_limit": 4, "early_stop_patience": 100000,
              "train_amp": True, "lr_time_decay": True, "learning_rate": 0.002, "lr_patience": 100000}  # fmt: skip
    log = check(bundle("training", "train.json", tmp_path, dataset_dir=str(data), **values))
    assert "Reached the time limit" in log
    state = torch.load(tmp_path / "b" / "models" / "model_last.pt", weights_only=False)
    lr = state["optimizer"]["param_groups"][0]["lr"]
    assert 0.002 * 0.01 - 1e-12 <= lr < 0.002 * 0.5, lr
    weights = state["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())


def test_inference_modes_and_optional_outputs(trained, tmp_path):
    """Patch (reference) mode, prior adjustment, entropy maps and 2D overlays through the bundle; bad mode named."""
    data, common, dims = trained["data"], trained["common"], trained["dims"]
    gt = tifffile.imread(data / "val" / "ground_truth" / "v.tif")
    outputs = {}
    for mode in ("dense", "patch"):
        out = tmp_path / mode
        check(bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                     output_dir=str(out), mode=mode, save_uncertainty=True, save_overlay=True,
                     adjust_priors=mode == "dense", **common))  # fmt: skip
        outputs[mode] = tifffile.imread(out / "v.tif")
        assert outputs[mode].shape == gt.shape and outputs[mode].min() >= 1
        entropy = tifffile.imread(out / "v_entropy.tif")
        assert entropy.shape == gt.shape and entropy.min() >= 0 and entropy.max() <= 1 + 1e-6
        assert (out / "v_overlay.png").is_file() == (dims == 2)
    result = bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                    output_dir=str(tmp_path / "bad"), mode="fast", **common)  # fmt: skip
    assert result.returncode != 0 and "'dense', 'patch'" in result.stdout + result.stderr


@pytest.mark.parametrize("preset", ["cpu", "plus", "decoder"])
def test_preset_with_time_limit_stops_training(tmp_path, preset):
    """A preset merged over train.json; ``--time_limit`` ends its 1000-epoch schedule after 5 seconds (1 s could end
    it before its first epoch, and so before any model.pt, on a loaded machine). The same preset merged over
    inference.json rebuilds the trained network (ε-Seg+: with its fine-detail head and a stem without residual
    blocks, or its segmentation decoder)."""
    data = make_dataset(tmp_path / "data", (40, 44))
    configs = json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "presets" / f"{preset}.json")])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs]
    values = {"dataset_dir": str(data), "bundle_root": str(tmp_path / "b"), "num_classes": 3,
              "class_names": ["x", "y", "z"], **TINY_2D, "batch_size": 8, "epoch_length": 2,
              "time_limit": 5, "early_stop_patience": 100000}  # fmt: skip
    if preset == "decoder":
        values["dense_crop_size"] = 24  # the preset's 128 px crops are larger than the tiny images
    # early stopping is out of the way: only the time limit may end the 1000 epochs
    log = check(cli(cmd + overrides(values), cwd=tmp_path, timeout=600))
    assert "Reached the time limit" in log
    assert "until 1000 epochs" in log, "the preset's schedule was not applied"
    assert (tmp_path / "b" / "models" / "model_last.pt").is_file()
    weights = torch.load(tmp_path / "b" / "models" / "model.pt", map_location="cpu")
    assert any("fine" in k for k in weights) == (preset == "plus")
    assert any(k.startswith("segmentation_decoder.") for k in weights) == (preset == "decoder")
    # ε-Seg+'s stem is the 5x5 convolution alone (stem_blocks 0): no residual block's weights under stem.2
    assert any(k.startswith("stem.2.") for k in weights) == (preset != "plus")
    configs = json.dumps([str(CONFIGS / "inference.json"), str(CONFIGS / "presets" / f"{preset}.json")])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", configs]
    values = {"bundle_root": str(tmp_path / "b"), "input_dir": str(data / "val" / "images"),
              "output_dir": str(tmp_path / "pred"), "num_classes": 3, **TINY_2D}  # fmt: skip
    check(cli(cmd + overrides(values), cwd=tmp_path, timeout=600))
    assert tifffile.imread(tmp_path / "pred" / "v.tif").shape == (40, 44)


#: ε-Seg+ options on the tiny networks: fine-detail head (unmasked centre features) and the dense cross-entropy
PLUS = {"head_fine_levels": [0, 1], "fine_head_unmasked": True, "dense_ce_weight": 1.0}


#: ε-Seg+ with the segmentation decoder (per-pixel logits at full resolution) and the dense cross-entropy
DECODER = {"segmentation_decoder": True, "dense_ce_weight": 1.0}


@pytest.mark.parametrize("options", ["fine_head", "decoder"])
@pytest.mark.parametrize("dims", [2, 3], ids=["2d", "3d"])
def test_eps_seg_plus_trains_and_predicts(tmp_path, dims, options):
    """The ε-Seg+ options train through the bundle (dense cross-entropy on crops) and predict every pixel."""
    shape = (40, 44) if dims == 2 else (14, 16, 15)
    data = make_dataset(tmp_path / "data", shape)
    extra = PLUS if options == "fine_head" else DECODER
    net = {**(TINY_2D if dims == 2 else TINY_3D), **extra, "dense_crop_size": 24 if dims == 2 else 12}
    common = {**net, "bundle_root": str(tmp_path / "b"), "num_classes": 3, "class_names": ["x", "y", "z"]}
    log = check(bundle("training", "train.json", tmp_path, dataset_dir=str(data), **common, **SCHEDULE))
    assert "train_dense_ce" in log and "train_dense_pixels" in log and "val_mean_dice" in log
    out = tmp_path / "pred"
    check(bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"), output_dir=str(out),
                 **{k: v for k, v in common.items() if k not in ("dense_crop_size",)}))  # fmt: skip
    pred = tifffile.imread(out / "v.tif")
    assert pred.shape == shape and pred.min() >= 1 and pred.max() <= 3


def test_dense_crop_size_is_checked(tmp_path):
    data = make_dataset(tmp_path / "data", (40, 44))
    result = bundle("training", "train.json", tmp_path, dataset_dir=str(data), bundle_root=str(tmp_path / "b"),
                    num_classes=3, class_names=["x", "y", "z"], **TINY_2D, **SCHEDULE, **PLUS,
                    dense_crop_size=25)  # fmt: skip
    assert result.returncode != 0 and "dense_crop_size=25" in result.stdout + result.stderr


def test_self_training_overlay(tmp_path):
    """``self_train.json``: phase 1, dense pseudo-labels, self-training; ``model.pt`` is the better phase's model."""
    data = make_dataset(tmp_path / "data", (40, 44))
    configs = json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "self_train.json")])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs,
           "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]  # fmt: skip
    values = {"dataset_dir": str(data), "bundle_root": str(tmp_path / "b"), "num_classes": 3,
              "class_names": ["x", "y", "z"], **TINY_2D, **SCHEDULE, **PLUS, "dense_crop_size": 24,
              "self_training_crop_size": 32, "self_training_batch_size": 2, "self_training_epochs": 2,
              "self_training_time_limit": 0, "pseudo_label_threshold": 0.4}  # fmt: skip
    log = check(cli(cmd + overrides(values), cwd=tmp_path, timeout=600))
    models = tmp_path / "b" / "models"
    for name in ("model.pt", "model_supervised.pt", "model_self_training_last.pt"):
        assert (models / name).is_file(), name
    vals = [float(v) for v in re.findall(r"Metrics -- val_mean_dice: ([0-9.]+)", log)]
    assert len(vals) == 4  # 2 epochs of each phase
    # model.pt is the self-trained model only where it beat phase 1's validation (4 decimals logged: ties undecided)
    if abs(max(vals[2:]) - max(vals[:2])) > 1e-4:
        same = _same_weights(models / "model.pt", models / "model_supervised.pt")
        assert same == (max(vals[2:]) < max(vals[:2])), vals
    # resumable like phase 1: the phase-2 checkpoint continues phase 2 (phase 1 is not run again)
    ckpt = models / "self_training_checkpoint_epoch=2.pt"
    assert torch.load(ckpt, weights_only=True)["phase"] == "self_training"
    log = check(cli(cmd + overrides({**values, "self_training_epochs": 3, "resume_from": str(ckpt)}), cwd=tmp_path))
    assert f"Restored all variables from {ckpt}" in log and log.count("Metrics -- val_mean_dice:") == 1
    assert (models / "self_training_checkpoint_epoch=3.pt").is_file() and not ckpt.exists()


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _md5s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _last_line(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).strip().splitlines()[-1]


def test_multi_gpu_overlay_after_the_large_image_overlay_is_refused(tmp_path):
    """Each replaces the other's ``initialize`` and ``inference``: with the multi-GPU overlay last the large-image
    settings would be ignored, so the run is refused before anything is read or written, naming the order that works
    (large-image overlay last: ``tests/bundle/test_multi_gpu.py`` runs it under ``torchrun``)."""
    (tmp_path / "images").mkdir()
    result = bundle("inference", ["inference.json", "large_image_inference.json", "multi_gpu_inference.json"],
                    tmp_path, bundle_root=str(tmp_path / "b"), dataset_dir=str(tmp_path / "images"),
                    output_dir=str(tmp_path / "out"))  # fmt: skip
    assert result.returncode != 0 and "Put large_image_inference.json last" in _last_line(result), _last_line(result)
    assert not (tmp_path / "out").exists()


def test_mistyped_run_id_fails_and_run_is_an_alias(trained, tmp_path):
    """MONAI exits 0 and runs nothing for an unknown run id; ours name it. ``run`` (the zoo's id) = the named one."""
    data, common = trained["data"], trained["common"]
    models = Path(common["bundle_root"]) / "models"
    before = _md5s(models)
    result = bundle("trainig", "train.json", tmp_path, dataset_dir=str(data), **common, **SCHEDULE)
    assert result.returncode != 0 and "Unknown run id 'trainig'" in _last_line(result), _last_line(result)
    result = bundle("inferense", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                    output_dir=str(tmp_path / "p0"), bundle_root=common["bundle_root"])  # fmt: skip
    assert result.returncode != 0 and "Unknown run id 'inferense'" in _last_line(result)
    assert not (tmp_path / "p0").exists() and _md5s(models) == before
    check(bundle("run", "inference.json", tmp_path, input_dir=str(data / "val" / "images"),
                 output_dir=str(tmp_path / "p1"), bundle_root=common["bundle_root"]))  # fmt: skip
    assert (tmp_path / "p1" / "v.tif").is_file()
    ev = tmp_path / "ev"
    check(bundle("run", "evaluate.json", tmp_path, pred_dir=str(tmp_path / "p1"), output_dir=str(ev),
                 label_dir=str(data / "val" / "ground_truth"), bundle_root=common["bundle_root"]))  # fmt: skip
    report = json.loads((ev / "dice.json").read_text())
    assert set(report["overall"]) == {"x", "y", "z", "mean", "pixels"}, "class names come from models/network.json"


def test_training_never_replaces_a_trained_model_unasked(tmp_path):
    """A second training into the same bundle is refused before anything is written; ``--overwrite true``
    replaces the model; a failing run (bad labels) leaves every file of the earlier one as it was."""
    data = make_dataset(tmp_path / "data", (40, 44))
    root = tmp_path / "b"
    models = root / "models"
    args = {"dataset_dir": str(data), "bundle_root": str(root), "num_classes": 3, "class_names": ["x", "y", "z"],
            **TINY_2D, **SCHEDULE, "epochs": 1}  # fmt: skip
    check(bundle("training", "train.json", tmp_path, **args))
    before = _md5s(models)
    result = bundle("training", "train.json", tmp_path, **{**args, "seed": 1})
    assert result.returncode != 0
    assert "already holds a trained model" in _last_line(result) and "--overwrite true" in _last_line(result)
    assert _md5s(models) == before
    # a run with --overwrite that fails its input checks still changes nothing
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    label = tifffile.imread(bad / "labels" / "a.tif")
    label[0, 0] = 7
    tifffile.imwrite(bad / "labels" / "a.tif", label)
    result = bundle("training", "train.json", tmp_path, **{**args, "dataset_dir": str(bad), "overwrite": True})
    assert result.returncode != 0 and "a.tif" in _last_line(result), _last_line(result)
    assert _md5s(models) == before
    check(bundle("training", "train.json", tmp_path, **{**args, "seed": 1, "overwrite": True}))
    assert _md5s(models)["model.pt"] != before["model.pt"]
    # fine-tuning (the zoo's load_pretrain): starts from the trained weights; a missing file is named first
    missing = {"overwrite": True, "load_pretrain": True, "pretrained_checkpoint": str(tmp_path / "none.pt")}
    result = bundle("training", "train.json", tmp_path, **{**args, **missing})
    assert result.returncode != 0 and "none.pt not found" in _last_line(result), _last_line(result)
    log = check(bundle("training", "train.json", tmp_path, **{**args, "overwrite": True, "load_pretrain": True}))
    assert f"Restored all variables from {models / 'model.pt'}" in log


def test_resume_keeps_a_changed_epoch_length_and_refuses_weights_only_files(tmp_path):
    data = make_dataset(tmp_path / "data", (40, 44))
    models = tmp_path / "b" / "models"
    args = {"dataset_dir": str(data), "bundle_root": str(tmp_path / "b"), "num_classes": 3,
            "class_names": ["x", "y", "z"], **TINY_2D, **SCHEDULE, "epochs": 1}  # fmt: skip
    check(bundle("training", "train.json", tmp_path, **args))
    first = models / "checkpoint_epoch=1.pt"
    log = check(bundle("training", "train.json", tmp_path, **{**args, "epochs": 2, "epoch_length": 5,
                                                              "resume_from": str(first)}))  # fmt: skip
    assert "trained with epoch_length 3; the resumed run goes on with epoch_length 5" in log
    trainer = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)["trainer"]
    assert trainer["epoch_length"] == 5 and trainer["iteration"] == 2 * 5  # as if every epoch had 5 iterations
    weights_only = str(models / "model.pt")
    result = bundle("training", "train.json", tmp_path, **{**args, "epochs": 3, "resume_from": weights_only})
    assert result.returncode != 0 and "not a training checkpoint" in _last_line(result), _last_line(result)


def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(tmp_path):
    """The checkpoint holds the random states (patch sampling, masking, augmentation, dropout, latent samples) with
    the optimizer, LR scheduler and best model: 2 epochs in one run, or 1 epoch and a resume for the second, end
    with the same weights. A checkpoint without them (written before they were saved) resumes with a warning and
    draws other patches, so its weights differ: the comparison can fail."""
    data = make_dataset(tmp_path / "data", (40, 44))
    # epoch_length 4: a multiple of the 2 training images (see epsseg_monai.handlers.random_states)
    common = {"dataset_dir": str(data), "num_classes": 3, "class_names": ["x", "y", "z"], **TINY_2D, **SCHEDULE,
              "epoch_length": 4}  # fmt: skip

    def run(root: str, **values) -> str:
        values = {**common, "bundle_root": str(tmp_path / root), **values}
        return check(bundle("training", "train.json", tmp_path, **values))

    def weights(root: str, name: str = "checkpoint_epoch=2.pt") -> dict:
        state = torch.load(tmp_path / root / "models" / name, weights_only=True)
        return state["model"] if "model" in state else state

    run("straight", epochs=2)
    run("resumed", epochs=1)
    first = tmp_path / "resumed" / "models" / "checkpoint_epoch=1.pt"
    old = torch.load(first, weights_only=True)
    rng = old["random_states"]
    assert {"torch", "numpy", "python", "transforms"} <= set(rng) and rng["transforms"]
    del old["random_states"]
    older = tmp_path / "older_checkpoint_epoch=1.pt"
    torch.save(old, older)
    assert "Restored all variables" in run("resumed", epochs=2, resume_from=str(first))
    straight, resumed = weights("straight"), weights("resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), f"{key} differs after the resume"
    best = [weights(r, "model.pt") for r in ("straight", "resumed")]
    assert all(torch.equal(best[0][k], best[1][k]) for k in best[0]), "another best model after the resume"
    log = run("older", epochs=2, resume_from=str(older))
    assert "holds no ['random_states'] state" in log
    other = weights("older")
    assert not all(torch.equal(straight[k], other[k]) for k in straight), "the random states made no difference"


def test_weight_averaging_is_validated_saved_and_resumed(tmp_path):
    """With ``--weight_averaging DECAY`` the validated and saved model (``model.pt``) is the average of the weights,
    not the live network; the average rides in the checkpoint, so 1 epoch and a resume end with the model.pt of 2
    straight epochs (without it in the checkpoint the average would restart and differ)."""
    data = make_dataset(tmp_path / "data", (40, 44))
    common = {"dataset_dir": str(data), "num_classes": 3, "class_names": ["x", "y", "z"], **TINY_2D, **SCHEDULE,
              "epoch_length": 4, "weight_averaging": 0.9}  # fmt: skip

    def run(root: str, **values) -> str:
        return check(bundle("training", "train.json", tmp_path, **{**common, "bundle_root": str(tmp_path / root),
                                                                   **values}))  # fmt: skip

    def load(root: str, name: str) -> dict:
        return torch.load(tmp_path / root / "models" / name, weights_only=True)

    run("one", epochs=1)
    best, last = load("one", "model.pt"), load("one", "model_last.pt")
    average = {k.removeprefix("module."): v for k, v in last["weight_averaging"].items() if k != "n_averaged"}
    assert int(last["weight_averaging"]["n_averaged"]) == 4
    assert best.keys() == average.keys() == last["model"].keys()
    assert all(torch.equal(best[k], average[k]) for k in best), "model.pt is not the average of the weights"
    assert not all(torch.equal(best[k], last["model"][k]) for k in best), "model.pt is the live network"
    run("straight", epochs=2)
    log = run("one", epochs=2, resume_from=str(tmp_path / "one" / "models" / "checkpoint_epoch=1.pt"))
    assert "Restored all variables" in log and "starts afresh" not in log
    straight, resumed = load("straight", "model_last.pt"), load("one", "model_last.pt")
    for key in straight["weight_averaging"]:
        assert torch.equal(straight["weight_averaging"][key], resumed["weight_averaging"][key]), key
    best = [load(r, "model.pt") for r in ("straight", "one")]
    assert all(torch.equal(best[0][k], best[1][k]) for k in best[0]), "another best model after the resume"


def test_zoo_workflows_have_their_properties_and_run(tmp_path):
    """The model zoo's CI route: ``create_workflow`` (``ConfigWorkflow``, run id ``run``) for train and infer,
    ``check_properties()`` finds every required property and no optional one under a wrong id."""
    from monai.bundle import create_workflow

    data = make_dataset(tmp_path / "data", (40, 44))
    root = tmp_path / "b"
    meta = {"meta_file": str(CONFIGS / "metadata.json"), "logging_file": str(CONFIGS / "logging.conf")}
    train = create_workflow(config_file=str(CONFIGS / "train.json"), workflow_type="train", **meta,
                            bundle_root=str(root), dataset_dir=str(data), num_classes=3, class_names=["x", "y", "z"],
                            **TINY_2D, **{**SCHEDULE, "epochs": 1})  # fmt: skip
    assert train.check_properties() == []
    train.run()
    train.finalize()
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "network.json").is_file()
    out = tmp_path / "pred"
    images = str(data / "val" / "images")
    infer = create_workflow(config_file=str(CONFIGS / "inference.json"), workflow_type="infer", **meta,
                            bundle_root=str(root), dataset_dir=images, output_dir=str(out))  # fmt: skip
    assert infer.check_properties() == []
    infer.run()
    infer.finalize()
    assert tifffile.imread(out / "v.tif").shape == (40, 44)


def test_inference_suggests_where_to_click_next(trained, tmp_path):
    """``--suggest_clicks N`` writes ``<name>_clicks.csv`` (napari Points CSV), away from the existing clicks of
    the ``labels`` folder beside the images."""
    import csv

    data, common = trained["data"], trained["common"]
    out = tmp_path / "pred"
    check(bundle("inference", "inference.json", tmp_path, input_dir=str(data / "val" / "images"), output_dir=str(out),
                 bundle_root=common["bundle_root"], suggest_clicks=5))  # fmt: skip
    with open(out / "v_clicks.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    spatial = ["axis-0", "axis-1"] if trained["dims"] == 2 else ["axis-0", "axis-1", "axis-2"]
    assert len(rows) == 5 and list(rows[0]) == ["index", *spatial, "predicted_class", "uncertainty"]
    clicks = np.array([[int(r[a]) for a in spatial] for r in rows])
    labelled = np.argwhere(tifffile.imread(data / "val" / "labels" / "v.tif") > 0)
    spacing = common["patch_size"] // 4
    assert np.linalg.norm(clicks[:, None] - labelled[None], axis=-1).min() >= spacing
    assert {int(r["predicted_class"]) for r in rows} <= {1, 2, 3}


@pytest.mark.parametrize("valid", [False, True], ids=["padded", "valid"])
def test_torchscript_inference_equals_inference(trained, tmp_path, valid):
    """``inference_ts.json`` runs the exported dense predictor (no network class, no checkpoint) and gives
    ``inference.json``'s result: whole images with the padded export, MONAI's sliding window over the valid one."""
    from epsseg_monai.export import export_torchscript, load_torchscript

    data, common, dims = trained["data"], trained["common"], trained["dims"]
    ts = export_torchscript(common["bundle_root"], tmp_path / "model_dense.ts", valid=valid)
    halo = load_torchscript(ts)[1]["receptive_field"]
    images = str(data / "val" / "images")
    check(bundle("inference", "inference.json", tmp_path, input_dir=images, output_dir=str(tmp_path / "ref"),
                 save_probabilities=True, amp=False, **common))  # fmt: skip
    tile = {"tile_size": [2 * halo + 5] * dims} if valid else {}  # windows smaller than the image where it allows
    configs = ["inference.json", "inference_ts.json"]
    log = check(bundle("inference", configs, tmp_path, input_dir=images, output_dir=str(tmp_path / "ts"),
                       ts_file=str(ts), save_probabilities=True, **tile, **common))  # fmt: skip
    assert "Traceback" not in log
    for suffix in ("", "_prob"):
        ref, got = (tifffile.imread(tmp_path / d / f"v{suffix}.tif") for d in ("ref", "ts"))
        assert ref.shape == got.shape
        if suffix:
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
        else:
            np.testing.assert_array_equal(got, ref)


def test_torchscript_inference_names_the_missing_export(trained, tmp_path):
    common = trained["common"]
    missing = tmp_path / "nowhere.ts"
    result = bundle("inference", ["inference.json", "inference_ts.json"], tmp_path, ts_file=str(missing),
                    output_dir=str(tmp_path / "out"), **common)  # fmt: skip
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "nowhere.ts does not exist" in last and "epsseg_monai.export torchscript" in last
    (tmp_path / "junk.ts").write_bytes(b"not a model")
    result = bundle("inference", ["inference.json", "inference_ts.json"], tmp_path, ts_file=str(tmp_path / "junk.ts"),
                    output_dir=str(tmp_path / "out"), **common)  # fmt: skip
    assert result.returncode != 0 and "junk.ts is not a TorchScript file" in result.stderr.strip().splitlines()[-1]


def test_class_prior_calibration_from_held_out_clicks(trained, tmp_path):
    """``run calibrate`` (train.json) writes ``models/class_priors.json`` from the held-out clicks alone, refuses to
    replace it unasked, and ``inference --calibrate_priors true`` (or the default ``auto``, since the file exists)
    shifts the probabilities with it, ``false`` does not; a missing file and the EM adjustment together with it
    are refused with the fix as the last line."""
    data, common, dims = trained["data"], dict(trained["common"]), trained["dims"]
    root = tmp_path / "b"
    shutil.copytree(Path(common["bundle_root"]) / "models", root / "models")
    common["bundle_root"] = str(root)
    check(bundle("calibrate", "train.json", tmp_path, dataset_dir=str(data), **common))  # common: the network size
    report = json.loads((root / "models" / "class_priors.json").read_text())
    assert report["class_names"] == ["x", "y", "z"]
    assert report["held_out_clicks"] == [12, 12, 12], "the val/ folder's clicks, 12 per class"
    assert abs(sum(report["class_shares"]) - 1) < 1e-5 and min(report["class_shares"]) >= 0
    assert f"{report['strength']:g}" in report["estimated_dense_dice"]
    # the bootstrap check of the shift's gain (--calibration_confidence, 0.9 by default) is recorded with it
    assert report["confidence"] == 0.9 and 0.0 <= report["gain_confidence"] <= 1.0
    assert report["strength"] == (report["best_strength"] if report["gain_confidence"] >= 0.9 else 0.0)
    again = bundle("calibrate", "train.json", tmp_path, dataset_dir=str(data), **common)
    assert again.returncode != 0 and "--overwrite true" in _last_line(again), _last_line(again)

    # a strongly unequal calibration, so that the shift shows
    report.update(class_shares=[0.9, 0.08, 0.02], strength=1.0)
    (root / "models" / "class_priors.json").write_text(json.dumps(report))
    images = str(data / "val" / "images")
    check(bundle("inference", "inference.json", tmp_path, input_dir=images, output_dir=str(tmp_path / "plain"),
                 save_probabilities=True, amp=False, calibrate_priors="false", **common))  # fmt: skip
    check(bundle("inference", "inference.json", tmp_path, input_dir=images, output_dir=str(tmp_path / "shifted"),
                 save_probabilities=True, amp=False, calibrate_priors="true", **common))  # fmt: skip
    check(
        bundle(
            "inference",
            "inference.json",
            tmp_path,
            input_dir=images,
            output_dir=str(tmp_path / "auto"),
            save_probabilities=True,
            amp=False,
            **common,
        )
    )  # fmt: skip  (default "auto": the file is there)
    channels_first = (lambda p: np.moveaxis(p, 1, 0)) if dims == 3 else (lambda p: p)
    plain = channels_first(tifffile.imread(tmp_path / "plain" / "v_prob.tif"))
    shifted = channels_first(tifffile.imread(tmp_path / "shifted" / "v_prob.tif"))
    expected = plain * np.array([0.9, 0.08, 0.02]).reshape((3,) + (1,) * dims) * 3
    expected /= expected.sum(0, keepdims=True)
    np.testing.assert_allclose(shifted, expected, rtol=0, atol=1e-5)
    assert np.abs(shifted - plain).max() > 0.05
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "shifted" / "v.tif"), shifted.argmax(0) + 1)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "auto" / "v_prob.tif"),
                                  tifffile.imread(tmp_path / "shifted" / "v_prob.tif"))  # fmt: skip
    if dims == 2:  # the large-image overlay applies the same shift tile by tile (an uncompressed TIFF: no zarr)
        check(bundle("inference", ["inference.json", "large_image_inference.json"], tmp_path, input_dir=images,
                     output_dir=str(tmp_path / "large"), output_format="tif", tile_size=[7, 7], save_probabilities=True,
                     amp=False, calibrate_priors=True, **common))  # fmt: skip
        np.testing.assert_allclose(tifffile.imread(tmp_path / "large" / "v_prob.tif"), shifted, rtol=0, atol=1e-5)

    # a calibration of other weights (trained again into the same folder): skipped under auto, refused under true
    report["checkpoint_md5"] = "0" * 32
    (root / "models" / "class_priors.json").write_text(json.dumps(report))
    stale = check(bundle("inference", "inference.json", tmp_path, input_dir=images, output_dir=str(tmp_path / "stale"),
                         save_probabilities=True, amp=False, **common))  # fmt: skip
    assert "computed for other weights" in stale
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "stale" / "v_prob.tif"),
                                  tifffile.imread(tmp_path / "plain" / "v_prob.tif"))  # fmt: skip
    refused = bundle("inference", "inference.json", tmp_path, input_dir=images, output_dir=str(tmp_path / "refused"),
                     calibrate_priors="true", **common)  # fmt: skip
    assert refused.returncode != 0 and "computed for other weights" in _last_line(refused), _last_line(refused)

    both = bundle("inference", "inference.json", tmp_path, input_dir=images, output_dir=str(tmp_path / "both"),
                  calibrate_priors="true", adjust_priors="true", **common)  # fmt: skip
    assert both.returncode != 0 and "--adjust_priors and --calibrate_priors" in _last_line(both), _last_line(both)
    (root / "models" / "class_priors.json").unlink()
    missing = bundle("inference", "inference.json", tmp_path, input_dir=images, output_dir=str(tmp_path / "missing"),
                     calibrate_priors="true", **common)  # fmt: skip
    assert missing.returncode != 0 and "class_priors.json not found" in _last_line(missing), _last_line(missing)
    assert "run calibrate" in _last_line(missing)
    assert not (tmp_path / "both").exists() and not any((tmp_path / "missing").glob("*.tif"))


def test_training_calibrates_class_priors_when_asked(tmp_path):
    """``--calibrate_after_training true`` writes the same ``class_priors.json`` as a later ``run calibrate``."""
    data = make_dataset(tmp_path / "data", (40, 44))
    common = {**TINY_2D, "bundle_root": str(tmp_path / "b"), "num_classes": 3, "class_names": ["x", "y", "z"]}
    common["dataset_dir"] = str(data)
    log = check(bundle("training", "train.json", tmp_path, calibrate_after_training=True, **common, **SCHEDULE))
    path = tmp_path / "b" / "models" / "class_priors.json"
    first = json.loads(path.read_text())
    assert "Class shares estimated from 36 held-out clicks" in log
    check(bundle("calibrate", "train.json", tmp_path, overwrite=True, **common))
    assert json.loads(path.read_text()) == first


def test_false_on_the_command_line_means_false(trained, tmp_path):
    """``--overwrite false`` (lower case, as users type it) reaches the config as the string "false"; the configs read
    it as false, so a second prediction into the same folder is refused, and a misspelt flag is refused by name."""
    data, common = trained["data"], trained["common"]
    images, out = str(data / "val" / "images"), str(tmp_path / "out")
    check(bundle("inference", "inference.json", tmp_path, input_dir=images, output_dir=out, overwrite="false",
                 save_probabilities="false", **common))  # fmt: skip
    assert not (tmp_path / "out" / "v_prob.tif").exists(), "--save_probabilities false saved probabilities"
    before = _md5s(tmp_path / "out")
    again = bundle("inference", "inference.json", tmp_path, input_dir=images, output_dir=out, overwrite="false",
                   **common)  # fmt: skip
    assert again.returncode != 0 and "--overwrite true" in _last_line(again), _last_line(again)
    assert _md5s(tmp_path / "out") == before
    typo = bundle("inference", "inference.json", tmp_path, input_dir=images, output_dir=str(tmp_path / "t"),
                  tta="flase", **common)  # fmt: skip
    assert typo.returncode != 0 and "--tta must be true or false, got 'flase'" in _last_line(typo), _last_line(typo)


def test_large_images_refuse_what_needs_the_whole_image(tmp_path):
    """``--tta`` and ``--adjust_priors`` need the whole image; the large-image overlay refuses them (they were ignored
    silently) before anything is read or written."""
    (tmp_path / "images").mkdir()
    for option in ("tta", "adjust_priors"):
        result = bundle("inference", ["inference.json", "large_image_inference.json"], tmp_path,
                        bundle_root=str(tmp_path / "b"), dataset_dir=str(tmp_path / "images"),
                        output_dir=str(tmp_path / "out"), **{option: "true"})  # fmt: skip
        assert result.returncode != 0 and f"--{option} cannot be used here" in _last_line(result), _last_line(result)
    assert not (tmp_path / "out").exists()
