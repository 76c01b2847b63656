"""Early stopping whose patience survives an interrupted run (``--resume_from``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.handlers import EarlyStopHandler as _MonaiEarlyStopHandler

__all__ = ["EarlyStopHandler"]


class EarlyStopHandler(_MonaiEarlyStopHandler):
    """MONAI's :class:`~monai.handlers.EarlyStopHandler` with a ``state_dict``: the validations without improvement
    so far and the best score. Saved in the training checkpoints, a resumed run goes on counting where the
    interrupted one stopped instead of granting a fresh ``patience``.

    Args and behaviour otherwise as MONAI's handler. A state loaded before :meth:`set_trainer` is applied when the
    trainer is set.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending: dict[str, Any] | None = None
        super().__init__(*args, **kwargs)

    def set_trainer(self, trainer: Any) -> None:
        super().set_trainer(trainer)
        if self._pending is not None:
            self.load_state_dict(self._pending)

    def state_dict(self) -> dict[str, Any]:
        """``{"counter": validations without improvement, "best_score": best score so far or None}``."""
        if self._handler is None:
            return dict(self._pending or {"counter": 0, "best_score": None})
        best = self._handler.best_score
        return {"counter": int(self._handler.counter), "best_score": None if best is None else float(best)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"counter", "best_score"} - set(state)
        if missing:
            raise KeyError(f"Early-stopping state without {sorted(missing)}: {dict(state)}")
        best = state["best_score"]
        values = {"counter": int(state["counter"]), "best_score": None if best is None else float(best)}
        if self._handler is None:
            self._pending = values
            return
        self._handler.counter, self._handler.best_score = values["counter"], values["best_score"]
        self._pending = None
