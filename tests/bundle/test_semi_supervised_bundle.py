"""The semi-supervised second phase of ``train.json`` (``--semi_supervised_epochs N``) runs through ``monai.bundle``."""

from __future__ import annotations

import re

import torch
from test_bundle_configs import SCHEDULE, TINY_2D, bundle, check, make_dataset


def test_semi_supervised_phase_after_the_supervised_one(tmp_path):
    data = make_dataset(tmp_path / "data", (40, 44))
    root = tmp_path / "b"
    # 3 anchors (one per class) x (1 + 3 neighbours) = 12 patches per batch; a tiny temperature makes the
    # tiny network's pseudo-labels confident, so they are assigned and enter the loss
    args = {"dataset_dir": str(data), "bundle_root": str(root), "num_classes": 3, "class_names": ["x", "y", "z"],
            **TINY_2D, **SCHEDULE, "epochs": 1, "batch_size": 12, "num_neighbours": 3,
            "pseudo_temperature": 1e-3}  # fmt: skip
    log = check(bundle("training", "train.json", tmp_path, **args, semi_supervised_epochs=2))
    models = root / "models"
    # phase 2 started from the best supervised weights, kept as model_supervised.pt
    assert f"Restored all variables from {models / 'model_supervised.pt'}" in log
    for name in ("model.pt", "model_supervised.pt", "model_last.pt", "model_semi_supervised_last.pt"):
        assert (models / name).is_file(), name
    assert (models / "semi_supervised_checkpoint_epoch=2.pt").is_file()
    # the schedule's values and the fraction of pseudo-labelled neighbours are logged for each epoch of phase 2
    thresholds = [float(v) for v in re.findall(r"pseudo_threshold: ([0-9.]+)", log)]
    assert thresholds == [0.5, 0.505], thresholds
    assert re.findall(r"neighbour_radius: ([0-9.]+)", log)[0] == "5.0000"
    fractions = [float(v) for v in re.findall(r"train_pseudo_fraction: ([0-9.]+)", log)]
    assert len(fractions) == 2 and all(0.0 < f <= 1.0 for f in fractions), fractions
    assert len(re.findall(r"Metrics -- val_mean_dice: ", log)) == 3, "validation after each epoch of both phases"
    # phase 2 saved its own best model under model.pt: other weights than the supervised ones
    semi = torch.load(models / "model.pt", weights_only=True)
    supervised = torch.load(models / "model_supervised.pt", weights_only=True)
    assert semi.keys() == supervised.keys()
    assert any(not torch.equal(semi[k], supervised[k]) for k in semi)


def test_semi_supervised_phase_is_off_by_default(tmp_path):
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
    args = {"dataset_dir": str(data), "bundle_root": str(root), "num_classes": 3, "class_names": ["x", "y", "z"],
            **TINY_2D, **SCHEDULE, "epochs": 1, "val_interval": 2, "batch_size": 12, "num_neighbours": 3}  # fmt: skip
    log = check(bundle("training", "train.json", tmp_path, **args, semi_supervised_epochs=1))
    models = root / "models"
    assert "never validated" in log
    assert f"Restored all variables from {models / 'model_supervised.pt'}" in log
    final = torch.load(models / "model_last.pt", weights_only=True)["model"]
    kept = torch.load(models / "model_supervised.pt", weights_only=True)["model"]
    assert all(torch.equal(final[k], kept[k]) for k in final)
    assert (models / "model_semi_supervised_last.pt").is_file()
