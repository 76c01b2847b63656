"""Log the terms of the ε-Seg loss (inpainting, KL, contrastive, CE) as epoch metrics of a trainer."""

from __future__ import annotations

from collections import defaultdict

from ignite.engine import Engine, Events

__all__ = ["LossTermsHandler"]


class LossTermsHandler:
    """Average ``loss_function.terms`` over each epoch into ``engine.state.metrics`` (``<prefix><term>``).

    ``StatsHandler`` then prints and ``TensorBoardStatsHandler`` plots them with the other epoch metrics.

    Args:
        loss_function: a loss with a ``terms`` dict of scalars after each call
            (:class:`~epsseg_monai.losses.EpsSegTrainerLoss`).
        prefix: prefix of the metric names.
    """

    def __init__(self, loss_function: object, prefix: str = "train_") -> None:
        self.loss_function = loss_function
        self.prefix = prefix
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._sums.clear()
        self._count = 0

    def _accumulate(self, engine: Engine) -> None:
        terms = getattr(self.loss_function, "terms", None) or {}
        for name, value in terms.items():
            self._sums[name] += float(value)
        self._count += bool(terms)

    def _write(self, engine: Engine) -> None:
        for name, total in self._sums.items():
            engine.state.metrics[f"{self.prefix}{name}"] = total / max(self._count, 1)
