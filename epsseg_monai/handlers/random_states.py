"""The random states a training run draws from, saved in its checkpoints so that a resume continues the same draws.

Without them a resumed run restarts every random generator from the seed: it draws other patches, masks,
augmentations, dropout masks and latent samples than the uninterrupted run would have drawn after the same
epoch, and so ends at another model. :class:`RandomStates` is one checkpointable object (``state_dict`` /
``load_state_dict``, as ``TrainingCheckpoint`` and ``ResumeCheckpointLoader`` expect) holding:

- torch's global generator (dropout, latent samples, the ``DataLoader``'s shuffling and worker seeds) and, on
  CUDA, every device's generator;
- numpy's and Python's global generators;
- the generator ``R`` of every MONAI ``Randomizable`` in the given transforms (patch sampling, masking, rotations
  and flips), found through ``Compose`` and the transforms' attributes.

States are stored as tensors and plain numbers, so ``torch.load(weights_only=True)`` reads them.

A resumed run draws exactly what the uninterrupted one would when the checkpoint is an epoch's (not a
Ctrl-C's in the middle of one) and the training ``DataLoader`` was at the end of a pass over the dataset when
it was written, i.e. ``epoch_length`` is a multiple of the number of training images (ignite keeps a partly
used ``DataLoader`` iterator across epochs, which a checkpoint cannot hold); otherwise the draws differ from the
resume on, as with a different seed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable, Transform

__all__ = ["RandomStates", "randomizable_transforms"]

logger = logging.getLogger(__name__)


def randomizable_transforms(transforms: Any) -> list[Randomizable]:
    """Every ``Randomizable`` reachable from ``transforms`` (a transform, a ``Compose`` or a sequence), in a fixed
    order: depth first through sequences and the attributes of transforms (``Compose.transforms``, the array
    transform inside a dictionary one), each once."""
    seen: set[int] = set()
    found: list[Randomizable] = []

    def visit(obj: Any, depth: int) -> None:
        if depth > 16 or id(obj) in seen:
            return
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item, depth + 1)
            return
        if not isinstance(obj, (Transform, Randomizable)) or isinstance(obj, torch.nn.Module):
            return
        seen.add(id(obj))
        if isinstance(obj, Randomizable):
            found.append(obj)
        for value in vars(obj).values():
            visit(value, depth + 1)

    visit(transforms, 0)
    return found


def _numpy_state(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _from_numpy_state(state: Mapping[str, Any]) -> tuple:
    keys = np.asarray(state["keys"].numpy() if isinstance(state["keys"], torch.Tensor) else state["keys"])
    return (state["name"], keys.astype(np.uint32), int(state["pos"]), int(state["has_gauss"]), state["cached_gaussian"])


class RandomStates:
    """Checkpointable random states of a training run (see the module docstring).

    Args:
        transforms: the training transforms (e.g. the training dataset's ``Compose``); their ``Randomizable``
            members' generators are saved and restored. ``None``: the global generators only.

    Example (bundle config, beside the network and optimizer in the checkpoint's objects)::

        "random_states": {"_target_": "epsseg_monai.handlers.random_states.RandomStates",
                          "transforms": "@train#preprocessing"}
    """

    def __init__(self, transforms: Any = None) -> None:
        self.transforms = transforms

    def _members(self) -> list[Randomizable]:
        return [] if self.transforms is None else randomizable_transforms(self.transforms)

    def state_dict(self) -> dict[str, Any]:
        """The generators' current states."""
        version, internal, gauss = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(np.random.get_state()),  # noqa: NPY002 (the legacy global generator is what MONAI seeds)
            "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
            "transforms": [_numpy_state(t.R.get_state()) for t in self._members()],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the generators; a checkpoint with another number of random transforms (a changed config)
        restores the global generators only, with a warning."""
        torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor) else state["torch"])
        np.random.set_state(_from_numpy_state(state["numpy"]))  # noqa: NPY002
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        members, saved = self._members(), list(state.get("transforms", []))
        if len(members) != len(saved):
            logger.warning(
                f"The checkpoint holds the random states of {len(saved)} random transforms, this run has "
                f"{len(members)} (the training transforms changed): they keep their fresh seeds, so this run draws "
                "other patches than the interrupted one would have."
            )
            return
        for transform, s in zip(members, saved):
            transform.R.set_state(_from_numpy_state(s))
