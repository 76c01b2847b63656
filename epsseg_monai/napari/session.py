"""The interactive loop behind the napari plugin, without Qt: train on clicks, predict, suggest the next clicks.

:class:`InteractiveSession` keeps one work folder per image. Each :meth:`~InteractiveSession.train` call is a
*round*: the image and the current clicks are written as a one-image dataset in the bundle's layout
(``roundNNN/data/images`` + ``labels``), and the bundle's own training (``configs/train.json`` + a preset, the
same code path as ``python -m monai.bundle run training``) runs in the calling thread with a time budget,
writing ``roundNNN/models/`` (``model.pt``, ``model_last.pt``, ``network.json``, ``intensity_stats.json``) and
the config values it trained with (``roundNNN/config.json``).
A round continues from the previous round's best weights (``load_pretrain``), so painting more clicks and
training again refines the model instead of starting over; stopping a round (``stop`` event) ends it after the
current iteration with its checkpoints written, and nothing of an earlier round is ever changed.

:meth:`~InteractiveSession.predict` gives the label map, the class probabilities and a per-pixel uncertainty
(normalised entropy) through :class:`~epsseg_monai.inferers.DenseInferer`; :meth:`~InteractiveSession.suggest`
proposes where to click next (:class:`~epsseg_monai.transforms.SuggestClicks`).

The widget (:mod:`epsseg_monai.napari.widget`) only calls these methods, so everything here is tested without a
display.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["InteractiveSession", "Prediction", "TrainingProgress", "default_bundle_root"]

PRESETS = ("cpu", "plus")


def default_bundle_root() -> Path | None:
    """The ``bundle/`` folder of the source tree this package was installed from (``pip install -e``), if any."""
    here = Path(__file__).resolve().parents[2] / "bundle"
    return here if (here / "configs" / "train.json").is_file() else None


@dataclasses.dataclass
class TrainingProgress:
    """What a training round reports after every iteration (to a progress bar)."""

    fraction: float  # of the time budget spent, 0..1
    iteration: int
    epoch: int
    elapsed: float  # seconds
    loss: float
    best_metric: float | None  # best validation mean Dice so far (None before the first validation)


@dataclasses.dataclass
class Prediction:
    """A dense prediction of one image."""

    labels: np.ndarray  # uint8 class ids 1..C, the image's spatial shape
    probabilities: np.ndarray  # float32 (C, *spatial)
    uncertainty: np.ndarray  # float32 normalised entropy, 0 = certain, 1 = uniform
    model: Path  # the weights it came from


def _check_pair(image: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(
            f"The image has shape {image.shape}; ε-Seg takes a 2D image (Y, X) or a 3D volume (Z, Y, X) with one "
            "channel. Split the channels of a multichannel or RGB image into separate layers and pick one."
        )
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise ValueError(f"The image has dtype {image.dtype}; a real-valued image is needed.")
    if not np.isfinite(image).all():
        raise ValueError("The image contains NaN or infinite values; fix them (e.g. replace by 0) before training.")
    if labels is None:
        return image, None
    labels = np.asarray(labels)
    if labels.shape != image.shape:
        raise ValueError(
            f"The clicks layer has shape {labels.shape} but the image {image.shape}: paint the clicks in a Labels "
            "layer of the image's shape (napari: Layers > New Labels Layer with the image selected)."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"The clicks layer has dtype {labels.dtype}; label ids must be integers (0 = unlabelled).")
    if labels.min() < 0:
        raise ValueError("The clicks layer holds negative ids; use 0 for unlabelled and 1..C for the classes.")
    return image, labels


class InteractiveSession:
    """Train ε-Seg on the clicks of one image, round after round, predict it and propose the next clicks.

    Args:
        work_dir: folder of the session's rounds (created; an existing session's rounds are continued).
        bundle_root: the bundle to train with (its ``configs/train.json`` and ``configs/presets``); default: the
            ``bundle/`` folder of the source tree (an editable install), see :func:`default_bundle_root`.
        preset: a preset name in ``configs/presets`` (``"cpu"``: the CPU preset; ``"plus"``: ε-Seg+), a JSON file,
            or a mapping of config values; later ``overrides`` win.
        overrides: further config values (e.g. ``{"batch_size": 16}``).
        class_names: names of classes ``1..C`` (default ``class 1``, ...).
    """

    def __init__(
        self,
        work_dir: str | os.PathLike,
        bundle_root: str | os.PathLike | None = None,
        preset: str | os.PathLike | Mapping[str, Any] = "cpu",
        overrides: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
        if root is None or not (root / "configs" / "train.json").is_file():
            where = "the source tree of this installation" if root is None else str(root)
            raise FileNotFoundError(
                f"No ε-Seg bundle found in {where} (configs/train.json is missing). Install the package from a clone "
                "(pip install -e '.[napari]' in the repository) or point bundle_root to a bundle folder, e.g. one "
                "downloaded from the MONAI model zoo."
            )
        self.bundle_root = root
        self.work_dir = Path(work_dir)
        self.preset = preset
        self.overrides = dict(overrides or {})
        self.class_names = list(class_names) if class_names is not None else None
        self._cache: tuple[Path, Any, dict] | None = None

    # ------------------------------------------------------------------ rounds
    def rounds(self) -> list[Path]:
        """The round folders of this session, oldest first."""
        if not self.work_dir.is_dir():
            return []
        return sorted(p for p in self.work_dir.iterdir() if p.is_dir() and re.fullmatch(r"round\d{3}", p.name))

    def latest_model(self) -> Path | None:
        """The weights of the newest round that wrote any: its best ``model.pt``, else its ``model_last.pt``."""
        for folder in reversed(self.rounds()):
            for name in ("model.pt", "model_last.pt"):
                if (folder / "models" / name).is_file() and (folder / "models" / "network.json").is_file():
                    return folder / "models" / name
        return None

    def _preset_values(self) -> dict[str, Any]:
        if isinstance(self.preset, Mapping):
            return dict(self.preset)
        path = Path(self.preset)
        if not path.suffix:
            path = self.bundle_root / "configs" / "presets" / f"{self.preset}.json"
        if not path.is_file():
            raise FileNotFoundError(f"Preset {self.preset!r} not found ({path}); use one of {PRESETS} or a JSON file.")
        return json.loads(path.read_text())

    # ------------------------------------------------------------------ training
    def train(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        time_limit: float = 120.0,
        num_classes: int | None = None,
        continue_training: bool = True,
        stop: threading.Event | None = None,
        progress: Callable[[TrainingProgress], None] | None = None,
        seed: int = 0,
    ) -> Path:
        """Train one round on ``image`` and its clicks ``labels`` (0 = unlabelled, 1..C = class).

        Args:
            image: ``(Y, X)`` image or ``(Z, Y, X)`` volume.
            labels: clicks or scribbles of the same shape.
            time_limit: seconds of training (the learning rate decays over them with the CPU presets).
            num_classes: number of classes (default: the largest id clicked, or ``len(class_names)``).
            continue_training: start from the latest round's weights (when there is one and it has the same
                network and classes) instead of from scratch.
            stop: when set (from another thread), the round ends after the current iteration; its last
                checkpoint and best weights so far stay.
            progress: called after every iteration with a :class:`TrainingProgress`.
            seed: random seed of the round.

        Returns:
            The round's ``models/`` folder.
        """
        import tifffile
        from ignite.engine import Events
        from monai.bundle import ConfigParser

        image, labels = _check_pair(image, labels)
        assert labels is not None
        if not labels.any():
            raise ValueError("The clicks layer is empty: paint or click at least one pixel of every class (ids 1..C).")
        top = int(labels.max())
        num_classes = num_classes or (len(self.class_names) if self.class_names else max(top, 2))
        if top > num_classes:
            raise ValueError(f"The clicks use id {top} but there are {num_classes} classes; use ids 1..{num_classes}.")
        if num_classes < 2:
            raise ValueError("ε-Seg needs at least 2 classes (e.g. 1 = background, 2 = object).")
        names = self.class_names or [f"class {i}" for i in range(1, num_classes + 1)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes.")

        preset = self._preset_values()
        previous = self.latest_model() if continue_training else None
        folder = self.work_dir / f"round{len(self.rounds()):03d}"
        data = folder / "data"
        (data / "images").mkdir(parents=True, exist_ok=False)
        (data / "labels").mkdir(parents=True)
        tifffile.imwrite(data / "images" / "image.tif", np.ascontiguousarray(image))
        tifffile.imwrite(data / "labels" / "image.tif", np.ascontiguousarray(labels.astype(np.uint8)))

        values = {**preset, **self.overrides}
        values.update(
            {
                "bundle_root": str(self.bundle_root),
                "dataset_dir": str(data),
                "model_dir": str(folder / "models"),
                "output_dir": str(folder / "eval"),
                "spatial_dims": image.ndim,
                "num_classes": num_classes,
                "class_names": names,
                "time_limit": float(time_limit),
                "seed": seed,
            }
        )
        if previous is not None and self._compatible(previous, values, names):
            values.update({"load_pretrain": True, "pretrained_checkpoint": str(previous)})
        (folder / "config.json").write_text(json.dumps(values, indent=2) + "\n")  # what this round trained with
        parser = ConfigParser()
        parser.read_config(str(self.bundle_root / "configs" / "train.json"))
        parser.update(values)
        # the bundle's initialize without its command-line error hook (this runs inside an application)
        parser["initialize"] = [s for s in parser["initialize"] if "install_error_hook" not in str(s)]
        parser.get_parsed_content("initialize")
        trainer = parser.get_parsed_content("train#trainer")
        validator = parser.get_parsed_content("validate#evaluator")
        start = time.monotonic()

        @trainer.on(Events.ITERATION_COMPLETED)
        def _report(engine: Any) -> None:
            if progress is not None:
                elapsed = time.monotonic() - start
                output = engine.state.output
                loss = output.get("loss") if isinstance(output, Mapping) else None
                state = validator.state
                best = float(state.best_metric) if getattr(state, "best_metric_epoch", -1) > 0 else None
                progress(
                    TrainingProgress(
                        fraction=min(1.0, elapsed / max(float(time_limit), 1e-9)),
                        iteration=int(engine.state.iteration),
                        epoch=int(engine.state.epoch),
                        elapsed=elapsed,
                        loss=float(loss) if loss is not None else float("nan"),
                        best_metric=best,
                    )
                )
            if stop is not None and stop.is_set():  # checked last: a stop set while reporting counts at once
                engine.terminate()

        parser.get_parsed_content("training")
        self._cache = None
        return folder / "models"

    @staticmethod
    def _compatible(previous: Path, values: Mapping[str, Any], names: Sequence[str]) -> bool:
        """Whether the previous round's network has the classes and spatial dims this round trains."""
        from epsseg_monai.networks import load_network_config

        config = load_network_config(previous.parent / "network.json")
        net = config["network"]
        return (
            int(net.get("num_classes", -1)) == int(values["num_classes"])
            and int(net.get("spatial_dims", 2)) == int(values["spatial_dims"])
            and list(config.get("class_names") or names) == list(names)
        )

    # ------------------------------------------------------------------ prediction
    def _network(self, model: Path | None) -> tuple[Path, Any, dict]:
        from epsseg_monai.export import load_trained_network

        model = model or self.latest_model()
        if model is None:
            raise FileNotFoundError(f"No trained model in {self.work_dir} yet: train first.")
        if self._cache is None or self._cache[0] != model:
            net, info = load_trained_network(model.parent.parent, model)
            self._cache = (model, net, info)
        return self._cache

    def predict(
        self, image: np.ndarray, model: str | os.PathLike | None = None, amp: bool | str = "auto"
    ) -> Prediction:
        """Label map, class probabilities and uncertainty of ``image`` from the latest (or the given) weights.

        Where training calibrated the class shares of these weights (``class_priors.json`` beside them, written by
        ``presets/plus.json``'s ``calibrate_after_training``), the probabilities are shifted as ``inference.json``
        shifts them by default.
        """
        from epsseg_monai.inferers import DenseInferer
        from epsseg_monai.inferers.dense import class_entropy
        from epsseg_monai.metrics.class_shares import prior_calibration_transform

        image, _ = _check_pair(image, None)
        path, net, info = self._network(Path(model) if model is not None else None)
        dims = int(info["network"].get("spatial_dims", 2))
        if image.ndim != dims:
            raise ValueError(f"The model at {path} is {dims}D but the image has {image.ndim} dimensions {image.shape}.")
        stats = info["intensity_stats"]
        x = (torch.as_tensor(image, dtype=torch.float32) - float(stats["mean"][0])) / float(stats["std"][0])
        with torch.no_grad():
            probs = DenseInferer(amp=amp)(x[None, None], net)[0].float()
        # the class-share calibration of these weights, where training wrote one (presets/plus.json does)
        calibration = prior_calibration_transform(
            path.parent / "class_priors.json", "auto", probs.shape[0], checkpoint=path
        )
        if calibration is not None:
            probs = calibration.shift(probs)
        uncertainty = class_entropy(probs[None])[0, 0]
        return Prediction(
            labels=(probs.argmax(0) + 1).to(torch.uint8).numpy(),
            probabilities=probs.numpy(),
            uncertainty=uncertainty.numpy().astype(np.float32),
            model=path,
        )

    @staticmethod
    def suggest(
        prediction: Prediction, labels: np.ndarray | None, num_clicks: int, min_distance: float = 16.0
    ) -> np.ndarray:
        """Where to click next: ``(N, ndim + 2)`` rows of position, predicted class and uncertainty score.

        Positions are unlabelled pixels where the model is least sure (margin between its two most likely
        classes), at least ``min_distance`` apart, taken in turn from each predicted class
        (:class:`~epsseg_monai.transforms.SuggestClicks`).
        """
        from epsseg_monai.transforms import SuggestClicks

        if labels is not None and np.asarray(labels).shape != prediction.labels.shape:
            raise ValueError(
                f"The clicks layer has shape {np.shape(labels)}, the prediction {prediction.labels.shape}."
            )
        return SuggestClicks(num_clicks, min_distance=min_distance)(prediction.probabilities, labels)
