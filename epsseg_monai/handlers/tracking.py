"""Experiment tracking (``monai.bundle run ... --tracking mlflow``) with the ε-Seg trainer's output.

MONAI's ``--tracking mlflow`` appends an ``MLFlowHandler`` to the trainer's handlers whose ``output_transform`` is
``from_engine(["loss"], first=True)``. That expects the decollated output of MONAI's standard trainers (a list of
per-sample dicts); the ε-Seg trainer keeps its batch output as one dict (``decollate: false``: the network's
output holds per-level lists and the GMM components, which do not split per sample), for which ``from_engine``
returns a 1-tuple that MLflow cannot log. :func:`adapt_tracking_handlers` makes such handlers read the loss of a
dict output directly and leaves every other output to their own transform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["adapt_tracking_handlers"]

#: MONAI's experiment-tracking handlers that log the trainer's per-iteration output.
TRACKING_HANDLERS = ("MLFlowHandler", "ClearMLStatsHandler")


def _loss_first(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def transform(output: Any) -> Any:
        if isinstance(output, dict) and "loss" in output:
            return output["loss"]
        return original(output)

    transform.adapted = True  # type: ignore[attr-defined]
    return transform


def adapt_tracking_handlers(handlers: Sequence[Any] | None) -> Sequence[Any] | None:
    """Let the tracking handlers among ``handlers`` (instantiated, attached or not) log a dict output's loss.

    Args:
        handlers: a trainer's handler objects (``@train#handlers`` in the bundle).

    Returns:
        ``handlers``, so a bundle config can chain it.
    """
    for handler in handlers or ():
        if type(handler).__name__ not in TRACKING_HANDLERS or not hasattr(handler, "output_transform"):
            continue
        if not getattr(handler.output_transform, "adapted", False):
            handler.output_transform = _loss_first(handler.output_transform)
    return handlers
