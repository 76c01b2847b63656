"""Tests of ``epsseg_monai.transforms.click_suggestions``: uncertain, spread out, per class, away from clicks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from epsseg_monai.transforms import SuggestClicks, SuggestClicksd, click_uncertainty, write_clicks_csv


def _probs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Three classes in bands along the last axis, softly mixed near the band boundaries, plus noise."""
    rng = np.random.default_rng(seed)
    x = np.arange(shape[-1], dtype=np.float32)
    logits = np.stack([-((x - c) ** 2) / 200.0 for c in (shape[-1] * 0.15, shape[-1] * 0.5, shape[-1] * 0.85)])
    logits = np.broadcast_to(logits.reshape(3, *(1,) * (len(shape) - 1), shape[-1]), (3, *shape)).copy()
    logits += 0.05 * rng.standard_normal(logits.shape).astype(np.float32)
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


def test_uncertainty_is_one_minus_the_margin():
    p = np.array([[0.5, 0.9, 0.0], [0.5, 0.1, 0.0]], np.float32)[:, None, :]
    np.testing.assert_allclose(click_uncertainty(p)[0], [1.0, 0.2, -1.0], atol=1e-6)  # tie, confident, unpredicted
    with pytest.raises(ValueError, match="2 classes"):
        click_uncertainty(np.ones((1, 4, 4)))


@pytest.mark.parametrize("shape", [(60, 90), (12, 30, 45)])
def test_proposals_are_uncertain_spread_and_cover_every_class(shape):
    probs = _probs(shape)
    # border_margin=0: spreading and class coverage over the whole (thin) volume; the margin is tested below
    clicks = SuggestClicks(num_clicks=9, min_distance=6, border_margin=0)(torch.from_numpy(probs))
    dims = len(shape)
    assert clicks.shape == (9, dims + 2)
    pos = clicks[:, :dims].astype(int)
    dist = np.linalg.norm(pos[:, None].astype(float) - pos[None].astype(float), axis=-1)
    assert dist[~np.eye(9, dtype=bool)].min() >= 6, "two proposals closer than min_distance"
    assert set(clicks[:, dims].astype(int)) == {1, 2, 3}, "round-robin over the predicted classes"
    score = click_uncertainty(probs)
    np.testing.assert_allclose(clicks[:, dims + 1], score[tuple(pos.T)], atol=1e-6)
    assert np.median(clicks[:, dims + 1]) > np.quantile(score, 0.9), "proposals are not among the uncertain pixels"
    # deterministic
    np.testing.assert_array_equal(clicks, SuggestClicks(9, 6, 0)(probs))


def test_existing_clicks_are_avoided_and_fewer_candidates_give_fewer_proposals():
    probs = _probs((40, 60))
    labels = np.zeros((1, 40, 60), np.uint8)
    first = SuggestClicks(3, min_distance=8)(probs)
    for y, x in first[:, :2].astype(int):
        labels[0, y, x] = 1
    again = SuggestClicks(3, min_distance=8)(probs, labels)
    d = np.linalg.norm(again[:, None, :2] - first[None, :, :2], axis=-1)
    assert d.min() >= 8, "a proposal next to an existing click"
    many = SuggestClicks(1000, min_distance=8)(probs)
    assert 0 < len(many) < 1000 and len(SuggestClicks(0)(probs)) == 0
    with pytest.raises(ValueError, match="do not match"):
        SuggestClicks(3)(probs, labels[:, :10])


def test_dictionary_version_reads_the_label_file_and_csv_opens_as_napari_points(tmp_path):
    import tifffile
    from monai.data import MetaTensor

    probs = _probs((40, 60))
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    labels = np.zeros((40, 60), np.uint8)
    labels[20, 30] = 2
    tifffile.imwrite(tmp_path / "labels" / "s1.tif", labels)
    image = MetaTensor(torch.zeros(1, 40, 60), meta={"filename_or_obj": str(tmp_path / "images" / "s1.tif")})
    out = SuggestClicksd("pred", num_clicks=4, min_distance=10, label_dir=str(tmp_path / "labels"))(
        {"pred": torch.from_numpy(probs), "image": image}
    )
    clicks = out["clicks"]
    assert len(clicks) == 4 and np.linalg.norm(clicks[:, :2] - [20, 30], axis=1).min() >= 10
    path = write_clicks_csv(clicks, tmp_path / "s1_clicks.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "axis-0", "axis-1", "predicted_class", "uncertainty"]
    assert [(int(r["axis-0"]), int(r["axis-1"])) for r in rows] == [tuple(c) for c in clicks[:, :2].astype(int)]


@pytest.mark.parametrize("shape", [(48, 64), (20, 48, 64)])
def test_no_proposal_within_the_border_margin(shape):
    probs = _probs(shape, seed=1)
    # the model is most uncertain on the image's edge (where it sees padding): a tie on the first rows/columns
    edge = [slice(None)] * (len(shape) + 1)
    for axis in range(1, len(shape) + 1):
        edge[axis] = slice(0, 2)
        probs[tuple(edge)] = 1.0 / 3
        edge[axis] = slice(None)
    dims = len(shape)
    near_edge = SuggestClicks(6, min_distance=5, border_margin=0)(probs)
    assert (near_edge[:, :dims].min(axis=1) < 2).any(), "without a margin the edge's tie should be proposed"
    for margin in (None, 7):
        clicks = SuggestClicks(6, min_distance=5, border_margin=margin)(probs)
        m = np.minimum(5 if margin is None else margin, np.array(shape) // 4)  # at most a quarter of an axis
        pos = clicks[:, :dims]
        assert len(clicks) == 6
        assert (pos >= m).all() and (pos <= np.array(shape) - 1 - m).all(), f"a proposal within {m} px of an edge"
    # on an axis shorter than four margins, the margin is a quarter of the axis
    small = SuggestClicks(2, min_distance=4, border_margin=50)(probs[(slice(None),) + (slice(0, 8),) * dims])
    assert len(small) >= 1 and (small[:, :dims] >= 2).all() and (small[:, :dims] <= 5).all()
    with pytest.raises(ValueError, match="border_margin"):
        SuggestClicks(3, border_margin=-1)
