"""Tests of the accuracy-benchmark baselines (``benchmarks/baselines``) on small synthetic images and the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from benchmarks.baselines.data import dice_scores, load_dataset
from benchmarks.baselines.forest import SIGMAS, feature_names, pixel_features
from benchmarks.baselines.unet import UNetBaseline, _CropSampler, masked_cross_entropy

#: A U-Net small enough to train in a few seconds on one CPU thread.
SMALL_UNET = {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1, "crop_size": 32, "roi_size": 32}


def disks(seed: int, size: int = 72, count: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Noisy image of bright disks on a dark background and its dense labels (1 background, 2 disk)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(count):
        cy, cx = rng.integers(8, size - 8, size=2)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(5, 9) ** 2
    image = np.where(mask, 180.0, 60.0) + rng.normal(0.0, 15.0, mask.shape)
    return image.astype(np.float32), mask.astype(np.int64) + 1


def clicks(dense: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sparse labels: ``per_class`` random pixels of each class keep their label, the rest is 0."""
    rng = np.random.default_rng(seed)
    sparse = np.zeros_like(dense)
    for cls in np.unique(dense):
        idx = np.flatnonzero(dense == cls)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
        sparse.flat[pick] = cls
    return sparse


# --- data ---------------------------------------------------------------------------------------------------------


def test_load_dataset_missing_root_names_path_and_option(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="--data_root") as info:
        load_dataset("vnc", missing)
    assert str(missing / "vnc") in str(info.value)


def test_load_dataset_missing_density_lists_available(tmp_path: Path) -> None:
    for sub in ("raw", "labels", "sparse_0.05pct"):
        (tmp_path / "nih3t3" / sub).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"sparse_0\.005pct.*--data_root") as info:
        load_dataset("nih3t3", tmp_path, density="0.005pct")
    assert "['sparse_0.05pct']" in str(info.value)


def test_load_dataset_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cells", tmp_path)


def test_dice_scores_sums_counts_over_images() -> None:
    truth = [np.array([[1, 1], [2, 2]]), np.array([[1, 2, 2, 2]])]
    pred = [np.array([[1, 2], [2, 2]]), np.array([[1, 1, 2, 2]])]
    # class 1: TP 2, FP 1, FN 1 -> 4/6; class 2: TP 4, FP 1, FN 1 -> 8/10
    per_class, mean = dice_scores(pred, truth, num_classes=2)
    np.testing.assert_allclose(per_class, [4 / 6, 8 / 10])
    assert mean == pytest.approx((4 / 6 + 8 / 10) / 2)


def test_dice_scores_refuses_unpredicted_pixels() -> None:
    with pytest.raises(ValueError, match="without a class id"):
        dice_scores([np.array([[0, 1]])], [np.array([[1, 1]])], num_classes=1)


# --- random forest --------------------------------------------------------------------------------------------------


def test_pixel_features_shape_and_values() -> None:
    image, _ = disks(0, size=64)
    feats = pixel_features(image)
    names = feature_names()
    assert feats.shape == (64, 64, 49) and len(names) == 49 and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    assert sum(n.startswith("gauss_") for n in names) == len(SIGMAS)
    col = {n: feats[..., i] for i, n in enumerate(names)}
    # independent reference filters
    np.testing.assert_allclose(col["gauss_s0.3"], ndimage.gaussian_filter(image, 0.3), rtol=1e-5)
    np.testing.assert_allclose(col["log_s1.6"], ndimage.gaussian_laplace(image, 1.6), rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(col["ggm_s3.5"], ndimage.gaussian_gradient_magnitude(image, 3.5), rtol=1e-3, atol=1e-2)
    for s in SIGMAS[1:]:
        assert (col[f"hess_eig1_s{s:g}"] >= col[f"hess_eig2_s{s:g}"]).all()
        # the structure tensor is positive semi-definite; the Hessian's trace is the Laplacian
        assert (col[f"st_eig2_s{s:g}"] >= -1e-2 * col[f"st_eig1_s{s:g}"].max()).all()
        np.testing.assert_allclose(
            col[f"hess_eig1_s{s:g}"] + col[f"hess_eig2_s{s:g}"], col[f"log_s{s:g}"], rtol=1e-3, atol=1e-2
        )


def test_forest_separates_disks_from_clicks() -> None:
    pytest.importorskip("sklearn")
    from benchmarks.baselines.forest import RandomForestBaseline

    train_image, train_dense = disks(0)
    test_image, test_dense = disks(1)
    forest = RandomForestBaseline(n_jobs=1).fit([train_image], [clicks(train_dense, 20, seed=0)])
    assert forest.num_train_pixels == 40
    pred = forest.predict(test_image)
    assert pred.shape == test_image.shape and set(np.unique(pred)) <= {1, 2}
    per_class, mean = dice_scores([pred], [test_dense], num_classes=2)
    assert min(per_class) > 0.9, per_class
    # row blocks do not change the result
    forest.chunk_rows = 5
    np.testing.assert_array_equal(forest.predict(test_image), pred)


def test_forest_needs_labels() -> None:
    pytest.importorskip("sklearn")
    from benchmarks.baselines.forest import RandomForestBaseline

    image, dense = disks(0, size=32)
    with pytest.raises(ValueError, match="no annotated pixels"):
        RandomForestBaseline(n_jobs=1).fit([image], [np.zeros_like(dense)])


# --- U-Net ----------------------------------------------------------------------------------------------------------


def test_masked_cross_entropy_ignores_unlabelled_pixels() -> None:
    logits = torch.randn(2, 3, 5, 6, requires_grad=True)
    labels = torch.zeros(2, 5, 6, dtype=torch.long)
    labels[0, 1, 2], labels[0, 4, 5], labels[1, 0, 0] = 1, 3, 2
    loss = masked_cross_entropy(logits, labels)
    loss.backward()
    # equals the mean negative log-likelihood of the three labelled pixels, class id c -> channel c - 1
    logp = F.log_softmax(logits.detach(), dim=1)
    expected = -(logp[0, 0, 1, 2] + logp[0, 2, 4, 5] + logp[1, 1, 0, 0]) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    unlabelled = (labels == 0)[:, None].expand_as(logits)
    assert (logits.grad[unlabelled] == 0).all()
    assert (logits.grad[~unlabelled] != 0).all()


def test_sparse_crops_keep_image_and_label_aligned() -> None:
    # unique intensities: the pixel under each labelled crop pixel must be the clicked pixel, whatever the
    # rotation/flip, and no label may come from outside the clicks (padding is unlabelled)
    size = 40
    image = np.arange(size * size, dtype=np.float32).reshape(size, size)
    labels = np.zeros((size, size), dtype=np.int64)
    points = {(0, 0): 1, (20, 33): 2, (39, 5): 2}
    for (y, x), cls in points.items():
        labels[y, x] = cls
    values = {image[p]: cls for p, cls in points.items()}
    sampler = _CropSampler([image], [labels], crop_size=16, dense=False, jitter=4, rng=np.random.default_rng(0))
    x, y = sampler.sample(200)
    assert x.shape == (200, 1, 16, 16) and y.shape == (200, 16, 16) and y.dtype == torch.int64
    for img, lab in zip(x[:, 0].numpy(), y.numpy()):
        assert 1 <= (lab > 0).sum() <= len(points)
        for v, cls in zip(img[lab > 0], lab[lab > 0]):
            assert values[v] == cls


def test_unet_learns_disks_from_sparse_clicks_only() -> None:
    # ~0.8 % of the pixels labelled: if unlabelled pixels entered the loss as background, the disks would be
    # predicted as background (disk Dice 0.0 when tried); with the clicks only it is about 0.8
    train_image, train_dense = disks(0, size=64)
    test_image, test_dense = disks(1, size=64)
    sparse = clicks(train_dense, 16, seed=0)
    model = UNetBaseline(2, time_budget_s=60, max_steps=250, batch_size=8, **SMALL_UNET)
    model.fit([train_image], [sparse])
    assert model.steps == 250 and len(model.losses) == 250
    pred = model.predict(test_image)
    assert pred.shape == test_image.shape and pred.dtype == np.int64
    per_class, _ = dice_scores([pred], [test_dense], num_classes=2)
    assert min(per_class) > 0.7, per_class


def test_unet_dense_mode_and_odd_sizes() -> None:
    image, dense = disks(2, size=48)
    model = UNetBaseline(2, dense=True, max_steps=3, batch_size=2, **SMALL_UNET).fit([image], [dense])
    assert model.steps == 3 and np.isfinite(model.losses).all()
    odd = image[:45, :21]  # smaller than a window and not a multiple of the stride
    pred = model.predict(odd)
    assert pred.shape == odd.shape and set(np.unique(pred)) <= {1, 2}
    with pytest.raises(ValueError, match="dense=True needs every pixel labelled"):
        UNetBaseline(2, dense=True, max_steps=1, **SMALL_UNET).fit([image], [clicks(dense, 5, seed=0)])


def test_unet_stops_at_time_budget() -> None:
    image, dense = disks(3, size=48)
    model = UNetBaseline(2, time_budget_s=1.0, max_steps=None, batch_size=2, **SMALL_UNET)
    model.fit([image], [clicks(dense, 10, seed=0)])
    assert model.steps >= 1
    assert 1.0 <= model.train_seconds < 4.0


def test_unet_refuses_unbounded_training() -> None:
    with pytest.raises(ValueError, match="time_budget_s or max_steps"):
        UNetBaseline(2, time_budget_s=None, max_steps=None)


# --- real data ------------------------------------------------------------------------------------------------------


def test_real_datasets_load(data_dir: Path) -> None:
    for density, per_class in (("sparse_0.05pct", 131), ("0.005pct", 13)):
        vnc = load_dataset("vnc", data_dir, density=density)
        assert vnc.train_ids == [f"{s:02d}" for s in range(12)] and vnc.test_ids == ["12", "13", "14"]
        assert vnc.train_images.shape == vnc.train_sparse.shape == vnc.train_dense.shape == (12, 1024, 1024)
        assert vnc.test_images.shape == vnc.test_dense.shape == (3, 1024, 1024)
        assert vnc.train_images.dtype == np.float32 and vnc.train_sparse.dtype == vnc.test_dense.dtype == np.int64
        assert vnc.num_classes == 4
        assert set(np.unique(vnc.train_dense)) == set(np.unique(vnc.test_dense)) == {1, 2, 3, 4}
        counts = np.stack([np.bincount(s.ravel(), minlength=5) for s in vnc.train_sparse])
        np.testing.assert_array_equal(counts[:, 1:], per_class)
        labelled = vnc.train_sparse > 0
        np.testing.assert_array_equal(vnc.train_sparse[labelled], vnc.train_dense[labelled])

    nih = load_dataset("nih3t3", data_dir)
    assert nih.class_names == ("background", "nucleus")
    assert len(nih.train_ids) == 14 and nih.test_ids == ["45", "46", "47", "49"]
    assert not set(nih.train_ids) & set(nih.test_ids)
    assert nih.train_images.shape == (14, 1024, 1344) and nih.test_dense.shape == (4, 1024, 1344)
    assert set(np.unique(nih.train_sparse)) == {0, 1, 2} and set(np.unique(nih.test_dense)) == {1, 2}
    labelled = nih.train_sparse > 0
    np.testing.assert_array_equal(nih.train_sparse[labelled], nih.train_dense[labelled])


@pytest.mark.parametrize("semi", [False, True], ids=["phase1-only", "with-semi-supervised"])
def test_accuracy_figure_panels(tmp_path, semi):
    """raw | ground truth | ε-Seg [phase 1 | + semi-supervised] | U-Net | forest, one panel per method present."""
    from PIL import Image

    from benchmarks.accuracy import figure
    from benchmarks.baselines.data import BenchmarkDataset

    rng = np.random.default_rng(0)
    dense = rng.integers(1, 4, (1, 40, 30))
    ds = BenchmarkDataset("toy", ("a", "b", "c"), *(np.zeros((1, 40, 30)),) * 3, rng.random((1, 40, 30)), dense,
                          ("0",), ("1",))  # fmt: skip
    preds = {"epsseg": [dense[0]], "unet_sparse": [dense[0]], "forest": [dense[0]]}
    if semi:
        preds["epsseg_phase1"] = [dense[0]]
    figure(ds, preds, tmp_path / "f.png", crop=384)
    image = np.asarray(Image.open(tmp_path / "f.png"))
    assert image.shape == (40 + 18, (5 + semi) * (30 + 4), 3)
    np.testing.assert_array_equal(image[18:, 2 * 34 : 2 * 34 + 30], image[18:, 34:64])  # ε-Seg = ground truth here


def test_train_step_benchmark_times_both_precisions_side_by_side() -> None:
    """``benchmarks/train_step.py --amp`` times float32 and bfloat16 steps in one run and prints the ratio."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, str(repo / "benchmarks" / "train_step.py"), "--batch", "4", "--filters", "8",
           "--blocks", "1", "--levels", "2", "--latent", "4", "--patch", "32", "--steps", "1", "--threads", "1",
           "--amp"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=repo)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "float32:" in out.stdout and "bfloat16:" in out.stdout
    ratio = float(out.stdout.split("bfloat16 / float32 speed: ")[1].split("x")[0])
    assert ratio > 0


def test_accuracy_preset_by_name_or_path(tmp_path: Path) -> None:
    """``--preset`` takes a shipped preset's name or the path of a variant's JSON file; a missing one is named."""
    from benchmarks.accuracy import preset_path, preset_values

    assert preset_path("cpu").parent.name == "presets" and preset_values(preset_path("cpu"))["num_levels"] >= 1
    variant = tmp_path / "variant.json"
    variant.write_text('{"num_levels": 2}')
    assert preset_values(preset_path(str(variant))) == {"num_levels": 2}
    with pytest.raises(FileNotFoundError, match="nope.json"):
        preset_path(str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="no_such_preset"):
        preset_path("no_such_preset")


def test_accuracy_epsseg_rows_from_a_tiny_preset(tmp_path: Path) -> None:
    """``run_epsseg`` trains the bundle with a preset file and predicts every ε-Seg row, TTA + prior and the
    class-share calibration included."""
    import argparse
    import json

    from benchmarks.accuracy import run_epsseg
    from benchmarks.baselines.data import BenchmarkDataset
    from epsseg_monai.inferers import DenseInferer, DihedralInferer
    from epsseg_monai.networks import EpsSegHVAE
    from epsseg_monai.transforms import AdjustClassPriors

    pairs = [disks(seed, size=48, count=3) for seed in range(4)]
    images = np.stack([p[0] for p in pairs])
    dense = np.stack([p[1] for p in pairs])
    sparse = np.stack([clicks(d, per_class=12, seed=i) for i, d in enumerate(dense[:3])])
    ds = BenchmarkDataset("toy", ("background", "disk"), images[:3], sparse, dense[:3], images[3:], dense[3:],
                          ["0", "1", "2"], ["3"])  # fmt: skip
    tiny = {"num_levels": 2, "num_filters": 8, "num_blocks": 1, "latent_channels": 4, "patch_size": 16,
            "head_window": 4, "batch_size": 4, "epochs": 2, "epoch_length": 2, "val_mode": "patch"}  # fmt: skip
    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps(tiny))
    args = argparse.Namespace(preset=str(preset), budget=60.0, epsseg_budget=None, semi_supervised_epochs=0,
                              threads=1, seed=3, reuse_epsseg=False)  # fmt: skip
    work = tmp_path / "work"
    outcomes, train_s, pred_s = run_epsseg(ds, args, work)
    rows = {"epsseg", "epsseg_tta", "epsseg_prior", "epsseg_tta_prior", "epsseg_calibrated", "epsseg_tta_calibrated"}
    assert set(outcomes) == set(pred_s) == rows
    assert train_s > 0 and pred_s["epsseg_tta_prior"] == pred_s["epsseg_tta"]
    assert "> seed: 3" in (work / "train.log").read_text()  # the bundle trained with the benchmark's seed
    for labels in outcomes.values():
        assert len(labels) == 1 and labels[0].shape == (48, 48) and set(np.unique(labels[0])) <= {1, 2}

    # the TTA + prior row is the prior adjustment of the TTA probabilities of the trained model
    net = EpsSegHVAE(2, 1, 2, **{k: tiny[k] for k in ("num_levels", "num_filters", "num_blocks", "latent_channels",
                                                     "patch_size", "head_window")})  # fmt: skip
    state = torch.load(work / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state["model"] if "model" in state else state)
    stats = json.loads((work / "models" / "intensity_stats.json").read_text())
    x = torch.from_numpy((images[3] - stats["mean"][0]) / stats["std"][0]).float()[None, None]
    probs = DihedralInferer(DenseInferer(16))(x, net.eval())[0]
    np.testing.assert_array_equal(outcomes["epsseg_tta_prior"][0], AdjustClassPriors()(probs).argmax(0).numpy() + 1)
    np.testing.assert_array_equal(outcomes["epsseg_tta"][0], probs.argmax(0).numpy() + 1)

    # the calibrated row shifts the plain probabilities by the run's models/class_priors.json
    from epsseg_monai.transforms import shift_class_priors

    calibration = json.loads((work / "models" / "class_priors.json").read_text())
    plain = DenseInferer(16)(x, net.eval())[0]
    shifted = shift_class_priors(plain, calibration["class_shares"], calibration["strength"])
    np.testing.assert_array_equal(outcomes["epsseg_calibrated"][0], shifted.argmax(0).numpy() + 1)
    # and the TTA + calibration row the TTA probabilities by the same shift
    shifted_tta = shift_class_priors(probs, calibration["class_shares"], calibration["strength"])
    np.testing.assert_array_equal(outcomes["epsseg_tta_calibrated"][0], shifted_tta.argmax(0).numpy() + 1)


def test_unet_snapshots_are_the_weights_at_those_times() -> None:
    """``fit(snapshot_times=...)`` keeps the weights at each time; times past the end get the final weights."""
    image, dense = disks(4, size=48)
    model = UNetBaseline(2, time_budget_s=None, max_steps=4, batch_size=2, **SMALL_UNET)
    model.fit([image], [clicks(dense, 10, seed=0)], snapshot_times=[0.0, 1e6])
    assert sorted(model.snapshots) == [0.0, 1e6]
    untrained = UNetBaseline(2, time_budget_s=None, max_steps=0, batch_size=2, **SMALL_UNET)
    untrained.fit([image], [clicks(dense, 10, seed=0)])  # same seed: the same initial weights
    np.testing.assert_array_equal(model.predict(image, snapshot=0.0), untrained.predict(image))
    np.testing.assert_array_equal(model.predict(image, snapshot=1e6), model.predict(image))
    initial = model.snapshots[0.0]
    assert any(not torch.equal(initial[k], v) for k, v in model.net.state_dict().items())  # it trained
    with pytest.raises(KeyError, match="no snapshot at 5"):
        model.predict(image, snapshot=5.0)


def test_accuracy_curve_rows_and_plot(tmp_path: Path) -> None:
    """``--curve``: a U-Net row per budget from one run, and the learning-curve PNG of the ``method@Ts`` rows."""
    import argparse

    from PIL import Image

    from benchmarks.accuracy import learning_curve_plot, run_baseline
    from benchmarks.baselines.data import BenchmarkDataset

    pairs = [disks(seed, size=48, count=3) for seed in range(3)]
    images, dense = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    sparse = np.stack([clicks(d, per_class=12, seed=i) for i, d in enumerate(dense[:2])])
    ds = BenchmarkDataset("toy", ("background", "disk"), images[:2], sparse, dense[:2], images[2:], dense[2:],
                          ["0", "1"], ["2"])  # fmt: skip
    args = argparse.Namespace(budget=1.0, seed=0, threads=1)
    outcomes, train_s, pred_s = run_baseline("unet_sparse", ds, args, curve=[0.0, 0.5])
    assert set(outcomes) == set(train_s) == set(pred_s) == {"unet_sparse@0s", "unet_sparse@0.5s"}
    assert train_s["unet_sparse@0s"] == 0.0 and 0.0 < train_s["unet_sparse@0.5s"] <= 0.5
    for labels in outcomes.values():
        assert len(labels) == 1 and labels[0].shape == (48, 48) and set(np.unique(labels[0])) <= {1, 2}
    rows = {
        "epsseg@300s": {"mean_dice": 0.7}, "epsseg@900s": {"mean_dice": 0.75},
        "unet_sparse@300s": {"mean_dice": 0.6}, "unet_sparse@900s": {"mean_dice": 0.8}, "forest": {"mean_dice": 0.65},
    }  # fmt: skip
    assert learning_curve_plot(rows, "toy", tmp_path / "curve.png")
    assert Image.open(tmp_path / "curve.png").size[0] > 300
    assert not learning_curve_plot({"forest": {"mean_dice": 0.6}}, "toy", tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
