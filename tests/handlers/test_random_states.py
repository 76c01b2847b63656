"""Tests of ``epsseg_monai.handlers.random_states``: a checkpoint's random states make a resume draw the same."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
from monai.transforms import Compose, RandFlipd, RandRotate90d

from epsseg_monai.handlers import RandomStates
from epsseg_monai.handlers.random_states import randomizable_transforms
from epsseg_monai.transforms import RandSparseLabelPatchd


def _transforms() -> Compose:
    chain = Compose(
        [
            RandSparseLabelPatchd(["image", "label"], label_key="label", patch_size=5, num_samples=3),
            RandRotate90d(["image", "label"], prob=0.5),
            RandFlipd(["image", "label"], prob=0.5, spatial_axis=0),
        ]
    )
    return chain.set_random_state(seed=3)


def _draws(chain: Compose) -> list:
    image = np.arange(400, dtype=np.float32).reshape(1, 20, 20)
    label = np.zeros((1, 20, 20), np.uint8)
    label[0, ::3, ::4] = 1
    label[0, 1::5, 2::3] = 2
    patches = chain({"image": image, "label": label})
    return [
        torch.rand(3).tolist(),
        np.random.rand(2).tolist(),  # noqa: NPY002 (the global generator is what is saved)
        random.random(),
        [p["image"].sum().item() for p in patches],
        [p["center"].tolist() if hasattr(p["center"], "tolist") else p["center"] for p in patches],
    ]


def test_restored_states_repeat_every_draw_and_survive_a_weights_only_load(tmp_path):
    chain = _transforms()
    _draws(chain)  # advance every generator
    states = RandomStates(chain)
    torch.save(states.state_dict(), tmp_path / "rng.pt")
    first = _draws(chain)
    other = _draws(chain)
    assert first != other
    fresh = _transforms()  # a new run: the same config, its generators at their seeds
    _draws(fresh)
    _draws(fresh)
    RandomStates(fresh).load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws(fresh) == first


def test_the_sampler_inside_a_dictionary_transform_is_found_once():
    chain = _transforms()
    found = randomizable_transforms(chain)
    patch = chain.transforms[0]
    assert patch in found and patch.sampler in found and chain in found
    assert len(found) == len({id(t) for t in found})
    assert randomizable_transforms([chain, chain]) == found
    assert RandomStates().state_dict()["transforms"] == []


def test_another_number_of_random_transforms_restores_the_globals_with_a_warning(caplog):
    chain = _transforms()
    state = RandomStates(chain).state_dict()
    expected = torch.rand(2)
    smaller = Compose([RandFlipd("image", prob=0.5)])
    before = smaller.transforms[0].R.get_state()[1].copy()
    with caplog.at_level(logging.WARNING):
        RandomStates(smaller).load_state_dict(state)
    assert "the training transforms changed" in caplog.text
    assert torch.equal(torch.rand(2), expected)
    np.testing.assert_array_equal(smaller.transforms[0].R.get_state()[1], before)
