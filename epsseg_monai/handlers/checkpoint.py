"""Checkpoints that never lose training progress: atomic writes, the previous file kept until the new one is
complete, a last checkpoint on interruption (Ctrl-C, SIGTERM, an error), and the best model's metric carried
over a resume.

MONAI's ``CheckpointSaver`` writes in place (not atomically) and deletes the previous epoch's file first, so a
run killed at the wrong moment leaves a truncated checkpoint and nothing to resume from; its best-model saver
forgets the best metric on resume, so the first validation after a resume overwrites ``model.pt`` even when it
is worse. :class:`TrainingCheckpoint` and :class:`BestModelSaver` close both gaps; the best model's state rides
in the training checkpoint, so a resumed run ends with the model an uninterrupted run would keep.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["BestModelSaver", "TrainingCheckpoint", "atomic_save"]

logger = logging.getLogger(__name__)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename it over ``path``.

    A crash or kill during the write leaves ``path`` as it was (the old file, or none) and at most a stray
    ``.<name>.tmp`` file, never a truncated checkpoint under the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _state(obj: Any) -> Any:
    return obj.state_dict() if hasattr(obj, "state_dict") else obj


class BestModelSaver:
    """Save the network's weights when a validation metric improves; the best value survives a resume.

    Attach to the evaluator. ``model.pt`` is written atomically and only for finite metrics (a ``nan``
    validation never replaces a model). Its ``state_dict`` (best value and the trainer epoch it came from) goes
    into the training checkpoint (:class:`TrainingCheckpoint`), so after a resume only a better validation
    replaces ``model.pt``.

    Args:
        path: the file of the best weights (``models/model.pt``).
        network: the network whose ``state_dict`` is saved.
        metric_name: the evaluator's metric; higher is better.
        trainer: optional trainer, to record the epoch of the best model.
    """

    def __init__(
        self, path: str | os.PathLike, network: torch.nn.Module, metric_name: str, trainer: Engine | None = None
    ) -> None:
        self.path, self.network, self.metric_name, self.trainer = Path(path), network, metric_name, trainer
        self.best = -math.inf
        self.best_epoch = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        value = engine.state.metrics.get(self.metric_name)
        if value is None or not math.isfinite(float(value)) or float(value) <= self.best:
            return
        self.best = float(value)
        self.best_epoch = self.trainer.state.epoch if self.trainer is not None else engine.state.epoch
        module = getattr(self.network, "module", self.network)  # DataParallel / DDP
        atomic_save(module.state_dict(), self.path)
        logger.info(f"Saved {self.path} ({self.metric_name} {self.best:.4f}, epoch {self.best_epoch})")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state.get("best_epoch", 0))


class TrainingCheckpoint:
    """Everything a resume needs, after every ``save_interval`` epochs and whenever training stops.

    Writes ``<save_dir>/<prefix><epoch>.pt`` holding ``objects[k].state_dict()`` for every entry (network,
    optimizer, LR scheduler, trainer, time budget, best-model saver, ...), atomically; the previous checkpoint is
    deleted only after the new one is complete. When training ends it writes a last checkpoint (unless the
    current iteration is saved already) and ``final_filename`` (the same state under a fixed name). Run the
    trainer through :meth:`run` so that this also happens when it stops by an exception, Ctrl-C's ``KeyboardInterrupt``
    included (re-raised afterwards), and so that SIGTERM (``kill``, a cluster scheduler) stops it gracefully
    after the current iteration.

    Args:
        save_dir: folder of the checkpoints.
        objects: named objects with ``state_dict`` (an ``Engine`` included); ``objects[model_key]`` is the network.
        prefix: file name prefix of the checkpoints.
        final_filename: the state when training ends, the same content as the last checkpoint under a fixed name
            (its ``model_key`` entry holds the network's last weights; ``None``: not written).
        model_key: the entry of ``objects`` that is the network.
        save_interval: epochs between checkpoints.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        objects: Mapping[str, Any],
        prefix: str = "checkpoint_epoch=",
        final_filename: str | None = "model_last.pt",
        model_key: str = "model",
        save_interval: int = 1,
    ) -> None:
        if model_key not in objects:
            raise ValueError(f"objects must hold the network under {model_key!r}, got {sorted(objects)}.")
        self.save_dir, self.objects, self.prefix = Path(save_dir), dict(objects), prefix
        self.final_filename, self.model_key, self.save_interval = final_filename, model_key, max(1, int(save_interval))
        self.last_saved: Path | None = None
        self._saved_iteration: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.finish)

    def _states(self) -> dict[str, Any]:
        states = {k: _state(v) for k, v in self.objects.items()}
        model = self.objects[self.model_key]
        states[self.model_key] = _state(getattr(model, "module", model))  # DataParallel / DDP: the inner network
        return states

    def save(self, engine: Engine) -> Path:
        """Write the checkpoint of the engine's current state, then remove older ones of this prefix."""
        path = self.save_dir / f"{self.prefix}{engine.state.epoch}.pt"
        atomic_save(self._states(), path)
        for old in self.save_dir.glob(f"{self.prefix}*.pt"):
            if old != path:
                old.unlink(missing_ok=True)
        self.last_saved, self._saved_iteration = path, engine.state.iteration
        return path

    def finish(self, engine: Engine) -> None:
        """The last checkpoint (if this iteration is not saved yet) and the network's last weights."""
        if not engine.state.iteration:
            return
        if self._saved_iteration != engine.state.iteration:
            self.save(engine)
        if self.final_filename:
            atomic_save(self._states(), self.save_dir / self.final_filename)

    def run(self, engine: Engine) -> Any:
        """``engine.run()`` that leaves a last checkpoint however it stops (SIGTERM stops it gracefully)."""
        previous = None
        if threading.current_thread() is threading.main_thread():

            def stop(signum: int, frame: Any) -> None:
                logger.info("SIGTERM: stopping after this iteration and writing the last checkpoint.")
                engine.terminate()

            previous = signal.signal(signal.SIGTERM, stop)
        try:
            return engine.run()
        except BaseException:
            if engine.state is not None and engine.state.iteration:
                self.finish(engine)
                logger.info(f"Training stopped; the last checkpoint is {self.last_saved} (resume with --resume_from).")
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
