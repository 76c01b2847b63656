"""Hand-over from ε-Seg's supervised phase to its semi-supervised phase."""

from __future__ import annotations

import logging
import os
import shutil

__all__ = ["keep_supervised_model"]


def keep_supervised_model(
    best_model: str | os.PathLike,
    supervised_model: str | os.PathLike,
    final_model: str | os.PathLike | None = None,
) -> str:
    """Copy the supervised phase's best weights ``best_model`` to ``supervised_model`` before phase 2 starts.

    The semi-supervised phase starts from these weights (load them from the returned path, e.g. with
    ``monai.handlers.CheckpointLoader``) and then saves its own best model under ``best_model`` again, so the
    copy keeps the supervised result for comparison.

    Args:
        best_model: the best-model file written by the supervised phase (``models/model.pt``).
        supervised_model: where to keep the copy (``models/model_supervised.pt``).
        final_model: the supervised phase's final checkpoint (``models/model_last.pt``), used instead, with a
            warning, when there is no best model because the phase never validated (e.g. ``--time_limit``
            stopped it during its first epoch).

    Returns:
        ``supervised_model`` as a string.

    Raises:
        FileNotFoundError: when the supervised phase wrote neither a best model nor ``final_model``.
    """
    from ..utils import is_distributed, is_main_process

    if is_distributed():  # under torchrun: rank 0 has written phase 1's files before anyone looks
        import torch.distributed as dist

        dist.barrier()
    best_model, supervised_model = os.fspath(best_model), os.fspath(supervised_model)
    log = logging.getLogger(__name__)
    if not os.path.isfile(best_model) and final_model is not None and os.path.isfile(final_model):
        log.warning(
            f"No best supervised weights ({best_model}): the supervised phase never validated. The semi-supervised "
            f"phase starts from its final weights {os.fspath(final_model)} instead."
        )
        best_model = os.fspath(final_model)
    if not os.path.isfile(best_model):
        raise FileNotFoundError(
            f"The semi-supervised phase starts from the best supervised weights, but {best_model} does not exist: "
            "the supervised phase must validate at least once (val_interval <= epochs)."
        )
    if is_main_process():  # under torchrun rank 0 copies, the others wait for the copy before they read it
        shutil.copyfile(best_model, supervised_model)
        log.info(f"Kept the supervised weights {best_model} as {supervised_model}.")
    if is_distributed():
        dist.barrier()
    return supervised_model
