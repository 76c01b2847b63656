"""Hand-over to ε-Seg+'s self-training phase, and back to the better of the two phases' models."""

from __future__ import annotations

import logging
import math
import os
import shutil

import torch

from epsseg_monai.utils import check_network_state, load_checkpoint, unwrap_network

__all__ = ["keep_better_model", "load_weights"]


def load_weights(network: torch.nn.Module, path: str | os.PathLike, key: str = "model") -> torch.nn.Module:
    """Load the weights of checkpoint ``path`` (a state dict, or a dict holding one under ``key``) into ``network``.

    Read once and checked (:func:`~epsseg_monai.utils.check_network_state`): a missing or foreign file is named
    in the error.
    """
    inner = unwrap_network(network)
    inner.load_state_dict(check_network_state(load_checkpoint(path), inner, path, key=key))
    return network


def keep_better_model(
    best_model: str | os.PathLike,
    first_model: str | os.PathLike,
    first_metric: float | None,
    second_metric: float | None,
) -> str:
    """After a second training phase, keep the model with the better validation metric as ``best_model``.

    The second phase saves its best model under ``best_model`` (overwriting the first phase's, which was copied
    to ``first_model``); when it never beat the first phase's best metric, the first phase's model is copied back.

    Args:
        best_model: the best-model file (``models/model.pt``).
        first_model: the first phase's best model, kept before the second phase (``models/model_supervised.pt``).
        first_metric: the first phase's best validation metric (``None`` or NaN: never validated).
        second_metric: the second phase's best validation metric.

    Returns:
        ``"first"`` or ``"second"``: which phase's model ``best_model`` now holds.
    """
    log = logging.getLogger(__name__)

    def valid(m: float | None) -> bool:
        return m is not None and not math.isnan(float(m)) and float(m) > -math.inf

    if valid(second_metric) and (not valid(first_metric) or float(second_metric) > float(first_metric)):
        log.info(f"The second phase's model (validation {float(second_metric):.4f}) is {os.fspath(best_model)}.")
        return "second"
    shutil.copyfile(first_model, best_model)
    log.info(
        f"The second phase did not improve the validation metric ({second_metric} <= {first_metric}): "
        f"{os.fspath(best_model)} is the first phase's model again."
    )
    return "first"
