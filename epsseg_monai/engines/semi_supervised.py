"""Hand-over from ε-Seg's supervised phase to its semi-supervised phase."""

from __future__ import annotations

import logging
import os
import shutil

__all__ = ["keep_supervised_model"]


def keep_supervised_model(best_model: str | os.PathLike, supervised_model: str | os.PathLike) -> str:
    """Copy the supervised phase's best weights ``best_model`` to ``supervised_model`` before phase 2 starts.

    The semi-supervised phase starts from these weights (load them from the returned path, e.g. with
    ``monai.handlers.CheckpointLoader``) and then saves its own best model under ``best_model`` again, so the
    copy keeps the supervised result for comparison.

    Args:
        best_model: the best-model file written by the supervised phase (``models/model.pt``).
        supervised_model: where to keep the copy (``models/model_supervised.pt``).

    Returns:
        ``supervised_model`` as a string.

    Raises:
        FileNotFoundError: when the supervised phase wrote no best model (e.g. validation never ran).
    """
    best_model, supervised_model = os.fspath(best_model), os.fspath(supervised_model)
    if not os.path.isfile(best_model):
        raise FileNotFoundError(
            f"The semi-supervised phase starts from the best supervised weights, but {best_model} does not exist: "
            "the supervised phase must validate at least once (val_interval <= epochs)."
        )
    shutil.copyfile(best_model, supervised_model)
    logging.getLogger(__name__).info(f"Kept the best supervised weights {best_model} as {supervised_model}.")
    return supervised_model
