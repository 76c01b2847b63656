"""The shipped training augmentation keeps every patch's labelled pixel at the centre voxel ``patch_size // 2``.

Flipping or rotating a patch of even side ``p`` by 90 degrees moves index ``p // 2`` to ``p // 2 - 1``, so
the labelled pixel would leave the voxel the head classifies, the mask hides and the inferers predict (the
centre-convention pitfall of METHOD.md). ``train.json`` therefore samples patches of odd side ``p + 1``
(whose centre every flip and rotation keeps), augments them, and crops them to ``p``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose
from test_bundle_configs import CONFIGS


def _augmentation(section: str, spatial_dims: int, patch_size: int) -> list:
    parser = ConfigParser()
    overlays = ["semi_supervised.json"] if section == "semi_supervised" else []  # phase 2 is an overlay config
    parser.read_config([str(CONFIGS / name) for name in ("train.json", *overlays)])
    parser.update({"spatial_dims": spatial_dims, "patch_size": patch_size, "num_classes": 2, "batch_size": 16,
                   "num_neighbours": 3, "mask_size": 1})  # fmt: skip
    return parser.get_parsed_content(f"{section}#augmentation")


@pytest.mark.parametrize("section", ["train", "semi_supervised"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_labelled_pixel_stays_at_the_centre(section, spatial_dims):
    patch = 16 if spatial_dims == 2 else 8
    shape = (60, 50) if spatial_dims == 2 else (20, 24, 22)
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(1, *shape)  # every voxel value unique
    label = np.zeros((1, *shape), np.int64)
    rng = np.random.default_rng(0)
    for c in (1, 2):
        for _ in range(5):
            label[(0, *(int(rng.integers(0, s)) for s in shape))] = c
    transforms = Compose(_augmentation(section, spatial_dims, patch))
    centre = (patch // 2,) * spatial_dims
    seen_turned = 0
    for seed in range(4):
        transforms.set_random_state(seed)
        for sample in transforms({"image": torch.from_numpy(image), "label": torch.from_numpy(label)}):
            assert tuple(sample["image"].shape[1:]) == (patch,) * spatial_dims
            c = tuple(int(v) for v in sample["center"])
            # the mask hides the centre; the unmasked copy ("target") must hold the labelled voxel there
            assert float(sample["target"][(0, *centre)]) == image[(0, *c)], f"centre moved: patch around {c}"
            assert float(sample["image"][(0, *centre)]) == 0.0, "the mask does not hide the labelled voxel"
            corner = float(sample["target"][(0,) * (spatial_dims + 1)])
            offset = tuple(ci - patch // 2 for ci in c)
            inside = all(0 <= o < s for o, s in zip(offset, shape))
            seen_turned += inside and corner != image[(0, *offset)]
    assert seen_turned > 0, "no patch was flipped or rotated: the check would be vacuous"
