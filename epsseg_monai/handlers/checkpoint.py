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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.handlers import CheckpointLoader

from ..utils import is_main_process, network_shape_mismatches, unwrap_network

__all__ = [
    "BestModelSaver",
    "LastModelSaver",
    "ResumeCheckpointLoader",
    "TrainingCheckpoint",
    "atomic_save",
    "check_resume_phase",
    "checkpoint_phase",
    "check_training_outputs",
]

#: Key of a training checkpoint that names the training phase that wrote it (``"train"``, ``"semi_supervised"``,
#: ``"self_training"``); checkpoints without it are phase-1 (``"train"``) checkpoints.
PHASE_KEY = "phase"

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
        if value is not None and not math.isfinite(float(value)):
            logger.warning(
                f"Validation {self.metric_name} is {float(value)}: no held-out point could be scored (a class without "
                f"validation points, or none held out), so {self.path} is not replaced by this epoch's model. Add "
                "clicks (or a val/ folder with labels) so that every class has validation points."
            )
            return
        if value is None or float(value) <= self.best:
            return
        self.best = float(value)
        self.best_epoch = self.trainer.state.epoch if self.trainer is not None else engine.state.epoch
        if not is_main_process():  # under torchrun every rank keeps the best value, rank 0 writes the file
            return
        module = unwrap_network(self.network)
        atomic_save(module.state_dict(), self.path)
        logger.info(f"Saved {self.path} ({self.metric_name} {self.best:.4f}, epoch {self.best_epoch})")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state.get("best_epoch", 0))


class LastModelSaver:
    """Save the network's weights after every epoch: ``model.pt`` of a training without validation.

    With ``--val_fraction 0`` no click is held out, so no metric chooses the best epoch and ``model.pt`` is the
    last epoch's model (the averaged weights where ``weight_averaging`` is on), as a U-Net trained on every click
    keeps its last weights. Written atomically after every epoch and when training stops (a time budget ends it
    within an epoch), so an interrupted run still leaves the model of its last complete epoch. Attach to the
    trainer.

    Args:
        path: the file of the weights (``models/model.pt``).
        network: the network whose ``state_dict`` is saved (the averaged network under weight averaging).
    """

    def __init__(self, path: str | os.PathLike, network: torch.nn.Module) -> None:
        self.path, self.network = Path(path), network
        self._saved_iteration = -1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process() or engine.state.iteration == self._saved_iteration:
            return
        atomic_save(unwrap_network(self.network).state_dict(), self.path)
        self._saved_iteration = engine.state.iteration
        logger.info(
            f"Saved {self.path} (epoch {engine.state.epoch}, iteration {engine.state.iteration}: the last weights; "
            "no validation with --val_fraction 0)"
        )


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
        phase: the training phase, stored under ``"phase"`` in every checkpoint so that ``--resume_from`` knows
            which phase to continue (:func:`checkpoint_phase`).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        objects: Mapping[str, Any],
        prefix: str = "checkpoint_epoch=",
        final_filename: str | None = "model_last.pt",
        model_key: str = "model",
        save_interval: int = 1,
        phase: str = "train",
    ) -> None:
        if model_key not in objects:
            raise ValueError(f"objects must hold the network under {model_key!r}, got {sorted(objects)}.")
        self.save_dir, self.objects, self.prefix = Path(save_dir), dict(objects), prefix
        self.final_filename, self.model_key, self.save_interval = final_filename, model_key, max(1, int(save_interval))
        self.phase = str(phase)
        self.last_saved: Path | None = None
        self._saved_iteration: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.finish)

    def _states(self) -> dict[str, Any]:
        states = {k: _state(v) for k, v in self.objects.items()}
        model = self.objects[self.model_key]
        states[self.model_key] = _state(unwrap_network(model))
        states[PHASE_KEY] = self.phase
        return states

    def save(self, engine: Engine) -> Path:
        """Write the checkpoint of the engine's current state, then remove older ones of this prefix."""
        path = self.save_dir / f"{self.prefix}{engine.state.epoch}.pt"
        self.last_saved, self._saved_iteration = path, engine.state.iteration
        if not is_main_process():  # under torchrun rank 0 writes (the ranks' states are the same)
            return path
        atomic_save(self._states(), path)
        for old in self.save_dir.glob(f"{self.prefix}*.pt"):
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def finish(self, engine: Engine) -> None:
        """The last checkpoint (if this iteration is not saved yet) and the network's last weights."""
        if not engine.state.iteration:
            return
        if self._saved_iteration != engine.state.iteration:
            self.save(engine)
        if self.final_filename and is_main_process():
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


def checkpoint_phase(path: str | os.PathLike | None, network: torch.nn.Module | None = None) -> str | None:
    """The training phase that wrote checkpoint ``path`` (``"train"`` for checkpoints that do not say).

    ``None`` when ``path`` is ``None`` (not resuming). The file is checked first
    (:func:`~epsseg_monai.utils.check_checkpoint`), so a missing or corrupt file is named in the error. With
    ``network``, a checkpoint of another network size is refused here, at start-up, before the run writes
    anything (``network.json``, statistics, logs).
    """
    if path is None or path == "":
        return None
    from epsseg_monai.utils import load_checkpoint

    state = load_checkpoint(path)
    phase = _phase_of(state, path)
    if network is not None:
        _check_network_shapes({"model": network}, state, os.fspath(path))
    return phase


def _phase_of(state: Any, path: str | os.PathLike) -> str:
    """The phase recorded in the checkpoint ``state`` read from ``path``; refuses network weights alone."""
    phase = state.get(PHASE_KEY, "train") if isinstance(state, Mapping) else "train"
    if isinstance(state, Mapping) and "trainer" not in state:
        raise ValueError(
            f"{os.fspath(path)} holds network weights only, not a training checkpoint (no trainer state): "
            "--resume_from takes a models/checkpoint_epoch=N.pt file or models/model_last.pt. To start a new "
            "training from these weights instead, leave out --resume_from."
        )
    return str(phase)


def check_resume_phase(phase: str | None, phases: list[str] | tuple[str, ...], path: str | None = None) -> str | None:
    """Refuse to resume a checkpoint of a phase the current configs do not run (e.g. the semi-supervised phase's
    checkpoint without its overlay config); returns ``phase``."""
    if phase is not None and phase not in phases:
        overlay = {"semi_supervised": "semi_supervised.json", "self_training": "self_train.json"}.get(phase, "")
        hint = (
            f"add its overlay: --config_file \"['bundle/configs/train.json','bundle/configs/{overlay}']\""
            if overlay
            else "use the configs it was trained with"
        )
        raise ValueError(
            f"--resume_from {path}: the checkpoint is from the {phase!r} phase, which these configs do not run "
            f"(phases {list(phases)}); {hint}."
        )
    return phase


def check_training_outputs(
    model_dir: str | os.PathLike, overwrite: bool = False, resume_from: str | None = None
) -> None:
    """Refuse to start a new training over the weights and checkpoints of an earlier one in ``model_dir``.

    A new run would replace ``model.pt`` at its first validation and delete the earlier run's checkpoints, so it
    needs ``--overwrite true`` (or ``--resume_from`` to continue that run, or another ``--bundle_root``).
    """
    if overwrite or resume_from:
        return
    model_dir = Path(model_dir)
    found = sorted(
        p.name
        for pattern in ("model*.pt", "checkpoint_epoch=*.pt", "*_checkpoint_epoch=*.pt")
        for p in model_dir.glob(pattern)
    )
    if found:
        raise FileExistsError(
            f"{model_dir} already holds a trained model ({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}): "
            "a new training would replace it. Pass --overwrite true to replace it, --resume_from "
            f"{model_dir / 'model_last.pt'} to continue that training, or --bundle_root NEW_FOLDER to keep both."
        )


def _check_network_shapes(load_dict: Mapping[str, Any], checkpoint: Mapping[str, Any], path: str) -> None:
    """Refuse, in one line, a checkpoint of another network size (torch's message lists every mismatched tensor)."""
    network, saved = load_dict.get("model"), checkpoint.get("model")
    if not isinstance(network, torch.nn.Module) or not isinstance(saved, Mapping):
        return
    current = unwrap_network(network).state_dict()
    mismatched = network_shape_mismatches(saved, current)
    if mismatched:
        key = mismatched[0]
        beside = Path(path).parent / "network.json"
        hint = f" ({beside} holds its options)" if beside.is_file() else ""
        raise ValueError(
            f"--resume_from {path} was trained with another network size: {len(mismatched)} tensors differ, e.g. "
            f"{key} {tuple(saved[key].shape)} in the checkpoint, {tuple(current[key].shape)} in this run. Resume with "
            f"the network options and preset it was trained with{hint}, or start a new training."
        )


class ResumeCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` for ``--resume_from``: refuses a checkpoint of another training phase, and
    keeps the ``epoch_length`` the run was configured with (ignite would silently take the checkpoint's).

    Args:
        load_path: the training checkpoint.
        load_dict: the objects to restore, as for ``CheckpointLoader``.
        phase: the phase this loader resumes (``"train"``, ``"semi_supervised"``, ``"self_training"``).
        optional: names in ``load_dict`` that a checkpoint may lack (saved only by newer versions, e.g. the
            early-stopping state, the random states); the others must all be there.
        kwargs: further ``CheckpointLoader`` arguments (``map_location``, ``strict``; a resume restores whole
            states, so ``strict_shape=False`` is refused).
    """

    def __init__(
        self,
        load_path: str,
        load_dict: dict,
        phase: str = "train",
        optional: Sequence[str] = ("early_stop", "random_states"),
        **kwargs: Any,
    ) -> None:
        if kwargs.get("strict_shape", True) is False:
            raise ValueError("ResumeCheckpointLoader restores whole training states: strict_shape=False is refused.")
        super().__init__(load_path=load_path, load_dict=load_dict, **kwargs)
        self.phase = phase
        self.optional = tuple(optional)

    def _restore(self, engine: Engine) -> None:
        """MONAI's restore with one read of the file for the phase check and the states; the ``optional``
        objects may be absent from checkpoints written before they were saved (they keep their fresh state, with a
        warning)."""
        checkpoint = torch.load(self.load_path, map_location=self.map_location, weights_only=True)
        found = _phase_of(checkpoint, self.load_path)
        if found != self.phase:
            raise ValueError(
                f"--resume_from {self.load_path} is a checkpoint of the {found!r} phase, not of {self.phase!r}."
            )
        absent = [k for k in self.optional if k in self.load_dict and k not in checkpoint]
        if absent:
            logger.warning(f"{self.load_path} holds no {absent} state (an older checkpoint): they start afresh.")
        load_dict = {k: v for k, v in self.load_dict.items() if k not in absent}
        prior_max_epochs = engine.state.max_epochs
        _check_network_shapes(load_dict, checkpoint, self.load_path)
        Checkpoint.load_objects(to_load=load_dict, checkpoint=checkpoint, strict=self.strict)
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise ValueError(
                f"{self.load_path} has completed {engine.state.epoch} epochs, more than this run's --epochs "
                f"{prior_max_epochs}; pass a larger --epochs to train on from it."
            )
        engine.state.max_epochs = prior_max_epochs
        self.logger.info(f"Restored all variables from {self.load_path}")

    def __call__(self, engine: Engine) -> None:
        epoch_length = engine.state.epoch_length
        self._restore(engine)
        saved = engine.state.epoch_length
        if epoch_length is not None and saved is not None and saved != epoch_length:
            done, rest = divmod(engine.state.iteration, saved)
            engine.state.epoch_length = epoch_length
            engine.state.iteration = done * epoch_length + min(rest, epoch_length - 1)
            logger.warning(
                f"{self.load_path} was trained with epoch_length {saved}; the resumed run goes on with "
                f"epoch_length {epoch_length} as configured (epoch {done} completed)."
            )
