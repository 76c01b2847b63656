"""Tests of the EM class-prior adjustment (``epsseg_monai.transforms.prior_adjustment``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epsseg_monai.transforms import AdjustClassPriors, AdjustClassPriorsd, em_class_priors


def mixture(priors: list[float], n: int = 40000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Posteriors under uniform priors of a 1D Gaussian mixture with the given class frequencies, and the truth."""
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.tensor(priors), n, replacement=True, generator=g)
    means = torch.arange(len(priors), dtype=torch.float32) * 1.5
    x = means[y] + torch.randn(n, generator=g)
    lik = torch.exp(-0.5 * (x[None] - means[:, None]) ** 2)
    return (lik / lik.sum(0)).reshape(len(priors), 200, n // 200), y.reshape(200, n // 200)


def test_recovers_the_class_frequencies_and_improves_accuracy():
    probs, truth = mixture([0.7, 0.2, 0.1])
    adjusted, priors = em_class_priors(probs)
    np.testing.assert_allclose(priors.numpy(), [0.7, 0.2, 0.1], atol=0.02)
    before = (probs.argmax(0) == truth).float().mean()
    after = (adjusted.argmax(0) == truth).float().mean()
    assert after > before + 0.03
    torch.testing.assert_close(adjusted.sum(0), torch.ones(truth.shape))


def test_balanced_image_keeps_its_probabilities():
    probs, _ = mixture([1 / 3, 1 / 3, 1 / 3])
    adjusted, priors = em_class_priors(probs)
    np.testing.assert_allclose(priors.numpy(), [1 / 3] * 3, atol=0.02)
    assert (adjusted.argmax(0) != probs.argmax(0)).float().mean() < 0.02


def test_train_priors_are_divided_out():
    """A classifier trained with frequencies q on an image with the same frequencies needs no change."""
    probs, _ = mixture([0.5, 0.3, 0.2])
    q = torch.tensor([0.5, 0.3, 0.2])
    under_q = probs * q[:, None, None]
    under_q = under_q / under_q.sum(0)
    adjusted, priors = em_class_priors(under_q, train_priors=q)
    np.testing.assert_allclose(priors.numpy(), q.numpy(), atol=0.02)
    assert torch.allclose(adjusted, under_q, atol=0.05)


def test_array_and_dict_transforms_skip_unpredicted_pixels():
    probs, _ = mixture([0.8, 0.2], n=2000)
    probs[:, :5] = 0  # not predicted
    out = AdjustClassPriors()(probs.numpy())
    assert isinstance(out, np.ndarray) and out.shape == probs.shape
    assert (out[:, :5] == 0).all()
    np.testing.assert_allclose(out[:, 5:].sum(0), 1.0, rtol=1e-5)
    d = AdjustClassPriorsd("pred")({"pred": probs, "other": 1})
    torch.testing.assert_close(torch.as_tensor(d["pred"]), torch.as_tensor(out))
    assert d["other"] == 1


def test_bad_arguments_are_named():
    probs, _ = mixture([0.5, 0.5], n=400)
    with pytest.raises(ValueError, match="train_priors"):
        em_class_priors(probs, train_priors=[1.0, 0.0])
    with pytest.raises(ValueError, match="C\\[spatial\\]"):
        em_class_priors(torch.ones(3))


def test_shift_class_priors_interpolates_between_no_change_and_bayes_rule():
    from epsseg_monai.transforms import shift_class_priors

    probs, _ = mixture([0.7, 0.2, 0.1])
    priors = [0.7, 0.2, 0.1]
    assert shift_class_priors(probs, priors, 0.0) is probs
    bayes = probs * torch.tensor(priors)[:, None, None]
    bayes = bayes / bayes.sum(0)
    torch.testing.assert_close(shift_class_priors(probs, priors, 1.0), bayes)
    half = shift_class_priors(probs, priors, 0.5)
    torch.testing.assert_close(half.sum(0), torch.ones(probs.shape[1:]))
    rare = lambda p: (p.argmax(0) == 2).float().mean().item()  # noqa: E731
    assert rare(probs) > rare(half) > rare(bayes)  # the rare class shrinks step by step


def test_shift_class_priors_keeps_unpredicted_pixels_and_checks_its_arguments():
    from epsseg_monai.transforms import ShiftClassPriors, ShiftClassPriorsd, shift_class_priors

    probs = torch.tensor([[0.5, 0.0], [0.5, 0.0]])
    out = ShiftClassPriors([0.9, 0.1], 1.0)(probs)
    torch.testing.assert_close(out, torch.tensor([[0.9, 0.0], [0.1, 0.0]]))
    d = ShiftClassPriorsd("pred", [0.9, 0.1], 1.0)({"pred": probs.numpy(), "image": 1})
    assert isinstance(d["pred"], np.ndarray) and d["image"] == 1
    np.testing.assert_allclose(d["pred"], out.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="strength"):
        ShiftClassPriors([0.5, 0.5], 1.5)
    with pytest.raises(ValueError, match="priors must be 2"):
        shift_class_priors(probs, [0.2, 0.3, 0.5], 1.0)
    with pytest.raises(ValueError, match="C\\[spatial\\]"):
        shift_class_priors(torch.ones(2), [0.5, 0.5], 1.0)
