"""The napari plugin's loop without Qt: train rounds on clicks, stop, continue, predict, suggest, bad input."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from epsseg_monai.napari import InteractiveSession, TrainingProgress, default_bundle_root

TINY = {
    "num_levels": 2, "num_filters": 8, "num_blocks": 1, "latent_channels": 4, "head_hidden": 8, "patch_size": 16,
    "head_window": 4, "epochs": 2, "epoch_length": 3, "batch_size": 8, "val_mode": "patch",
}  # fmt: skip


def two_class_image(side: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A bright left half and a dark right half, with 8 clicks in each half."""
    rng = np.random.default_rng(0)
    image = np.where(np.arange(side)[None, :] < side // 2, 180.0, 60.0) + rng.normal(0, 10, (side, side))
    clicks = np.zeros((side, side), np.uint8)
    rows = rng.choice(side, 8, replace=False)
    clicks[rows, rng.integers(2, side // 2 - 2, 8)] = 1
    clicks[rows, rng.integers(side // 2 + 2, side - 2, 8)] = 2
    return image.astype(np.float32), clicks


@pytest.fixture
def session(tmp_path: Path) -> InteractiveSession:
    return InteractiveSession(tmp_path / "session", preset="cpu", overrides=TINY)


def test_bundle_of_the_source_tree_is_found() -> None:
    root = default_bundle_root()
    assert root is not None and (root / "configs" / "train.json").is_file()


def test_train_predict_suggest(session: InteractiveSession) -> None:
    image, clicks = two_class_image()
    reports: list[TrainingProgress] = []
    models = session.train(image, clicks, time_limit=600, progress=reports.append)
    assert models == session.work_dir / "round000" / "models"
    for name in ("model_last.pt", "network.json", "intensity_stats.json"):
        assert (models / name).is_file(), name
    assert [r.iteration for r in reports] == list(range(1, 7))  # 2 epochs of 3 steps
    assert all(0.0 <= r.fraction <= 1.0 and np.isfinite(r.loss) for r in reports)
    assert reports[-1].epoch == 2
    config = json.loads((session.work_dir / "round000" / "config.json").read_text())
    assert config["num_classes"] == 2 and config["time_limit"] == 600 and "load_pretrain" not in config

    pred = session.predict(image)
    assert pred.labels.shape == image.shape and pred.labels.dtype == np.uint8
    assert set(np.unique(pred.labels)) <= {1, 2}
    assert pred.probabilities.shape == (2, *image.shape)
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-4)
    assert pred.uncertainty.shape == image.shape
    assert pred.uncertainty.min() >= 0.0 and pred.uncertainty.max() <= 1.0 + 1e-6
    assert pred.model == session.latest_model()

    rows = session.suggest(pred, clicks, 5, min_distance=4)
    assert rows.shape[1] == 4 and 1 <= len(rows) <= 5
    pos = rows[:, :2].astype(int)
    assert (clicks[pos[:, 0], pos[:, 1]] == 0).all()  # only unlabelled pixels are proposed
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 1e9
    assert d.min() >= 4


def test_next_round_continues_from_the_last_model(session: InteractiveSession) -> None:
    image, clicks = two_class_image()
    session.train(image, clicks, time_limit=600)
    first = session.latest_model()
    more = clicks.copy()
    more[1, 1], more[1, -2] = 1, 2
    models = session.train(image, more, time_limit=600)
    assert models.parent.name == "round001"
    config = json.loads((models.parent / "config.json").read_text())
    assert config["load_pretrain"] is True and config["pretrained_checkpoint"] == str(first)
    assert session.latest_model().parent == models
    # the earlier round is untouched, and a fresh start is possible
    assert first.is_file()
    session.train(image, more, time_limit=600, continue_training=False)
    assert "load_pretrain" not in json.loads((session.work_dir / "round002" / "config.json").read_text())


def test_stop_ends_the_round_with_its_checkpoint(session: InteractiveSession) -> None:
    image, clicks = two_class_image()
    stop = threading.Event()
    reports: list[TrainingProgress] = []

    def report(p: TrainingProgress) -> None:
        reports.append(p)
        stop.set()  # as the widget's Stop button, from the first iteration on

    models = session.train(image, clicks, time_limit=600, stop=stop, progress=report)
    assert len(reports) == 1
    assert (models / "model_last.pt").is_file()
    assert session.latest_model() == models / "model_last.pt"  # no validation ran, so no model.pt
    assert session.predict(image).labels.shape == image.shape


@pytest.mark.parametrize(
    "change, message, num_classes",
    [
        (lambda im, lab: (im, lab[:-1]), "clicks layer has shape", None),
        (lambda im, lab: (im, np.zeros_like(lab)), "clicks layer is empty", None),
        (lambda im, lab: (np.where(lab > 0, np.nan, im), lab), "NaN", None),
        (lambda im, lab: (im[None, None], lab[None, None]), "2D image", None),
        (lambda im, lab: (im, lab.astype(np.float32)), "integers", None),
        (lambda im, lab: (im, np.where(lab == 2, 7, lab).astype(np.uint8)), "use id 7", 2),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    session: InteractiveSession, change, message: str, num_classes: int | None
) -> None:
    image, clicks = two_class_image()
    bad_image, bad_clicks = change(image, clicks)
    with pytest.raises(ValueError, match=message):
        session.train(bad_image, bad_clicks, num_classes=num_classes)
    assert session.rounds() == []


def test_predict_before_training_and_missing_bundle(tmp_path: Path) -> None:
    session = InteractiveSession(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="train first"):
        session.predict(np.zeros((32, 32), np.float32))
    with pytest.raises(FileNotFoundError, match="No ε-Seg bundle found"):
        InteractiveSession(tmp_path / "s", bundle_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="Preset 'fast'"):
        InteractiveSession(tmp_path / "s", preset="fast").train(*two_class_image())


def test_predict_applies_the_calibration_of_its_weights(tmp_path: Path) -> None:
    """With ``calibrate_after_training`` (``presets/plus.json`` sets it) the round writes ``class_priors.json`` and
    ``predict`` shifts the probabilities as ``inference.json`` does; a calibration of other weights is not used."""
    from epsseg_monai.transforms import shift_class_priors

    session = InteractiveSession(tmp_path / "s", preset="cpu", overrides={**TINY, "calibrate_after_training": True})
    image, clicks = two_class_image()
    models = session.train(image, clicks, time_limit=600)
    path = models / "class_priors.json"
    report = json.loads(path.read_text())
    plain_report = {**report, "checkpoint_md5": "0" * 32}  # as if computed for other weights
    path.write_text(json.dumps({**report, "class_shares": [0.95, 0.05], "strength": 1.0}))
    shifted = session.predict(image)
    path.write_text(json.dumps(plain_report))
    with pytest.warns(UserWarning, match="computed for other weights"):
        plain = session.predict(image)
    expected = shift_class_priors(torch.as_tensor(plain.probabilities), [0.95, 0.05], 1.0).numpy()
    np.testing.assert_allclose(shifted.probabilities, expected, atol=1e-5)
    assert np.abs(shifted.probabilities - plain.probabilities).max() > 0.01
