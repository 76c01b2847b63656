"""The paper's semi-supervised second phase: the overlay ``semi_supervised.json`` on ``train.json``, through
``monai.bundle``; resumable like phase 1."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from test_bundle_configs import SCHEDULE, TINY_2D, _same_weights, bundle, check, make_dataset

OVERLAY = ["train.json", "semi_supervised.json"]


def _args(data: Path, root: Path, **extra) -> dict:
    # 3 anchors (one per class) x (1 + 3 neighbours) = 12 patches per batch; a tiny temperature makes the
    # tiny network's pseudo-labels confident, so they are assigned and enter the loss
    return {"dataset_dir": str(data), "bundle_root": str(root), "num_classes": 3, "class_names": ["x", "y", "z"],
            **TINY_2D, **SCHEDULE, "epochs": 1, "batch_size": 12, "num_neighbours": 3, "pseudo_temperature": 1e-3,
            **extra}  # fmt: skip


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_semi_supervised_phase_after_the_supervised_one(tmp_path):
    data = make_dataset(tmp_path / "data", (40, 44))
    root = tmp_path / "b"
    log = check(bundle("training", OVERLAY, tmp_path, **_args(data, root, semi_supervised_epochs=2)))
    models = root / "models"
    # phase 2 started from the best supervised weights, kept as model_supervised.pt
    assert f"Restored all variables from {models / 'model_supervised.pt'}" in log
    for name in ("model.pt", "model_supervised.pt", "model_last.pt", "model_semi_supervised_last.pt"):
        assert (models / name).is_file(), name
    assert (models / "semi_supervised_checkpoint_epoch=2.pt").is_file()
    assert torch.load(models / "semi_supervised_checkpoint_epoch=2.pt", weights_only=True)["phase"] == "semi_supervised"
    # the schedule's values and the fraction of pseudo-labelled neighbours are logged for each epoch of phase 2
    thresholds = [float(v) for v in re.findall(r"pseudo_threshold: ([0-9.]+)", log)]
    assert thresholds == [0.5, 0.505], thresholds
    assert re.findall(r"neighbour_radius: ([0-9.]+)", log)[0] == "5.0000"
    fractions = [float(v) for v in re.findall(r"train_pseudo_fraction: ([0-9.]+)", log)]
    assert len(fractions) == 2 and all(0.0 < f <= 1.0 for f in fractions), fractions
    vals = [float(v) for v in re.findall(r"Metrics -- val_mean_dice: ([0-9.]+)", log)]
    assert len(vals) == 3, "validation after each epoch of both phases"
    # model.pt is phase 2's best only where it beat phase 1's validation (4 decimals in the log: ties undecided)
    if abs(max(vals[1:]) - vals[0]) > 1e-4:
        assert _same_weights(models / "model.pt", models / "model_supervised.pt") == (max(vals[1:]) < vals[0])


def test_semi_supervised_phase_is_not_built_without_its_overlay(tmp_path):
    data = make_dataset(tmp_path / "data", (40, 44))
    root = tmp_path / "b"
    log = check(bundle("training", "train.json", tmp_path, dataset_dir=str(data), bundle_root=str(root), num_classes=3,
                       class_names=["x", "y", "z"], **TINY_2D, **{**SCHEDULE, "epochs": 1}))  # fmt: skip
    models = root / "models"
    assert (models / "model.pt").is_file() and not (models / "model_supervised.pt").exists()
    assert not list(models.glob("*semi_supervised*"))
    assert "pseudo_threshold" not in log and "Restored all variables" not in log
    assert len(list((root / "eval" / "runs").glob("events.out.tfevents*"))) == 2, "phase 1's trainer and evaluator"


def test_semi_supervised_phase_starts_from_final_weights_without_validation(tmp_path):
    """Phase 1 never validated (here ``val_interval > epochs``; also a ``--time_limit`` hit in its first epoch):
    phase 2 starts from phase 1's final weights, with a warning, instead of failing."""
    data = make_dataset(tmp_path / "data", (40, 44))
    root = tmp_path / "b"
    log = check(bundle("training", OVERLAY, tmp_path, **_args(data, root, val_interval=2, semi_supervised_epochs=1)))
    models = root / "models"
    assert "never validated" in log
    assert f"Restored all variables from {models / 'model_supervised.pt'}" in log
    final = torch.load(models / "model_last.pt", weights_only=True)["model"]
    kept = torch.load(models / "model_supervised.pt", weights_only=True)["model"]
    assert all(torch.equal(final[k], kept[k]) for k in final)
    assert (models / "model_semi_supervised_last.pt").is_file()


def test_semi_supervised_phase_resumes_where_it_stopped(tmp_path):
    """``--resume_from`` a phase-2 checkpoint skips phase 1, keeps the supervised weights' copy, and continues
    phase 2's schedule (threshold) and epochs; without the overlay the checkpoint is refused by name."""
    data = make_dataset(tmp_path / "data", (40, 44))
    root = tmp_path / "b"
    models = root / "models"
    check(bundle("training", OVERLAY, tmp_path, **_args(data, root, semi_supervised_epochs=1)))
    ckpt = models / "semi_supervised_checkpoint_epoch=1.pt"
    supervised = _md5(models / "model_supervised.pt")
    assert torch.load(ckpt, weights_only=True)["schedule"]["threshold"] == 0.505

    result = bundle("training", "train.json", tmp_path, **_args(data, root, resume_from=str(ckpt)))
    assert result.returncode != 0
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert "'semi_supervised' phase" in last and "semi_supervised.json" in last, last

    log = check(bundle("training", OVERLAY, tmp_path, **_args(data, root, semi_supervised_epochs=2,
                                                              resume_from=str(ckpt))))  # fmt: skip
    assert f"Restored all variables from {ckpt}" in log
    assert log.count("Metrics -- val_mean_dice:") == 1, "phase 1 ran again or phase 2 did not continue"
    assert [float(v) for v in re.findall(r"pseudo_threshold: ([0-9.]+)", log)] == [0.505]
    assert _md5(models / "model_supervised.pt") == supervised
    assert (models / "semi_supervised_checkpoint_epoch=2.pt").is_file() and not ckpt.exists()
