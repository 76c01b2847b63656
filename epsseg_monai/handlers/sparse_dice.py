"""Ignite handler for :class:`~epsseg_monai.metrics.SparseDiceMetric` that also records per-class Dice."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ignite.engine import Engine
from monai.handlers import IgniteMetricHandler
from monai.handlers.utils import from_engine

from ..metrics.sparse_dice import SparseDiceMetric, _class_names

__all__ = ["SparseDiceHandler"]


class SparseDiceHandler(IgniteMetricHandler):
    """Mean Dice over labelled pixels as the metric ``name``, plus ``name_<class>`` for each class.

    Args:
        num_classes: number of classes ``C``.
        class_names: names of classes ``1..C`` for the per-class entries (default ``class1``...).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        output_transform: Callable = from_engine(["pred", "label"]),  # noqa: B008
    ) -> None:
        super().__init__(metric_fn=SparseDiceMetric(num_classes), output_transform=output_transform)
        self.class_names = _class_names(num_classes, class_names)

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        per_class = self.metric_fn.per_class  # type: ignore[attr-defined]
        if per_class is not None:
            for cname, value in zip(self.class_names, per_class.tolist()):
                engine.state.metrics[f"{name}_{cname}"] = value
