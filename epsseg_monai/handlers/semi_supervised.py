"""Schedule of ε-Seg's semi-supervised phase: pseudo-label threshold per epoch, neighbour radius on plateaus."""

from __future__ import annotations

import logging
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["SemiSupervisedScheduleHandler"]


class SemiSupervisedScheduleHandler:
    """Raise the pseudo-label confidence threshold every epoch; widen the neighbourhood when validation stalls.

    - After each training epoch the threshold rises by ``threshold_step`` up to ``max_threshold`` (ε-Seg: from
      0.5 by 0.005 to 0.99), so pseudo-labels get stricter as the latent space sharpens.
    - After each validation run of ``validator`` (its ``EPOCH_COMPLETED``), the run counts as an improvement
      when it set the validator's best key metric (``state.best_metric_epoch == state.epoch``, as updated by
      ``monai.engines.Workflow``). After ``radius_patience`` runs in a row without improvement the neighbour
      radius grows by ``radius_step`` (up to ``max_radius``) and the count restarts.

    The values used during each training epoch are written to the trainer's ``state.metrics`` as
    ``pseudo_threshold`` and ``neighbour_radius`` (so ``StatsHandler`` and ``TensorBoardStatsHandler`` show
    them), and every change is logged.

    Args:
        pseudo_labeller: object with a settable float ``threshold``
            (:class:`~epsseg_monai.losses.PseudoLabeller` or :class:`~epsseg_monai.losses.SemiSupervisedEpsSegLoss`).
        transform: object with a settable int ``radius`` (:class:`~epsseg_monai.transforms.RandNeighbourPatchd`),
            or ``None`` for the threshold schedule only.
        validator: the evaluator whose key metric decides on improvement, or ``None`` (radius never grows).
        threshold_step: threshold increase per training epoch.
        max_threshold: largest threshold.
        radius_step: radius increase after a plateau.
        max_radius: largest radius, or ``None`` for no limit.
        radius_patience: validation runs without improvement before the radius grows.
        name: name of the logger (default: this module's).
    """

    def __init__(
        self,
        pseudo_labeller: Any,
        transform: Any = None,
        validator: Engine | None = None,
        threshold_step: float = 0.005,
        max_threshold: float = 0.99,
        radius_step: int = 1,
        max_radius: int | None = None,
        radius_patience: int = 1,
        name: str | None = None,
    ) -> None:
        if not hasattr(pseudo_labeller, "threshold"):
            raise TypeError(f"pseudo_labeller needs a 'threshold' attribute, got {type(pseudo_labeller).__name__}.")
        if transform is not None and not hasattr(transform, "radius"):
            raise TypeError(f"transform needs a 'radius' attribute, got {type(transform).__name__}.")
        if radius_patience < 1:
            raise ValueError(f"radius_patience must be >= 1, got {radius_patience}.")
        self.pseudo_labeller = pseudo_labeller
        self.transform = transform
        self.validator = validator
        self.threshold_step = float(threshold_step)
        self.max_threshold = float(max_threshold)
        self.radius_step = int(radius_step)
        self.max_radius = None if max_radius is None else int(max_radius)
        self.radius_patience = int(radius_patience)
        self.logger = logging.getLogger(name or __name__)
        self.epochs_without_improvement = 0
        self._epoch_values: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        """Attach to the trainer ``engine`` (and to the validator's ``EPOCH_COMPLETED``, when given)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self.validation_completed)

    def epoch_started(self, engine: Engine) -> None:
        """Remember the threshold and radius this training epoch uses."""
        self._epoch_values = {"pseudo_threshold": float(self.pseudo_labeller.threshold)}
        if self.transform is not None:
            self._epoch_values["neighbour_radius"] = int(self.transform.radius)

    def epoch_completed(self, engine: Engine) -> None:
        """Log the epoch's threshold and radius, then raise the threshold."""
        engine.state.metrics.update(self._epoch_values)
        old = float(self.pseudo_labeller.threshold)
        new = min(old + self.threshold_step, self.max_threshold) if old < self.max_threshold else old
        self.pseudo_labeller.threshold = new
        radius = f", neighbour radius {self.transform.radius}" if self.transform is not None else ""
        self.logger.info(f"Epoch {engine.state.epoch}: pseudo-label threshold {old:.3f} -> {new:.3f}{radius}.")

    def validation_completed(self, validator: Engine) -> None:
        """Count validation runs without a new best key metric; grow the radius after ``radius_patience``."""
        improved = validator.state.best_metric_epoch == validator.state.epoch
        self.epochs_without_improvement = 0 if improved else self.epochs_without_improvement + 1
        if self.transform is None or self.epochs_without_improvement < self.radius_patience:
            return
        self.epochs_without_improvement = 0
        old = int(self.transform.radius)
        new = old + self.radius_step if self.max_radius is None else min(old + self.radius_step, self.max_radius)
        if new != old:
            self.transform.radius = new
            self.logger.info(
                f"No improvement of the validation metric for {self.radius_patience} epoch(s): "
                f"neighbour radius {old} -> {new}."
            )

    def state_dict(self) -> dict[str, float]:
        """Threshold, radius and plateau count, e.g. for ``CheckpointSaver``'s ``save_dict``."""
        state = {
            "threshold": float(self.pseudo_labeller.threshold),
            "epochs_without_improvement": float(self.epochs_without_improvement),
        }
        if self.transform is not None:
            state["radius"] = float(self.transform.radius)
        return state

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.pseudo_labeller.threshold = float(state["threshold"])
        self.epochs_without_improvement = int(state.get("epochs_without_improvement", 0))
        if self.transform is not None and "radius" in state:
            self.transform.radius = int(state["radius"])
