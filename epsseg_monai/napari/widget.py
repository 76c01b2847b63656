"""The napari dock widget: paint clicks, train ε-Seg, see prediction, uncertainty and where to click next.

Open it from napari's menu *Plugins > ε-Seg (epsseg-monai)*, or from Python::

    import napari
    from epsseg_monai.napari import EpsSegWidget

    viewer = napari.Viewer()
    viewer.window.add_dock_widget(EpsSegWidget(viewer), name="ε-Seg")

Pick the image layer and a Labels layer of clicks or scribbles (0 = unlabelled, 1..C = class), set the
training time and press *Train*: training runs in a worker thread (the viewer stays usable) with a progress bar,
and *Stop* ends it after the current iteration, keeping its checkpoints. Every *Train* is a round of
:class:`~epsseg_monai.napari.session.InteractiveSession` that continues from the previous round's model, so
"stop, paint more, train again" resumes instead of starting over. When a round ends, the prediction is added as
the Labels layer ``ε-Seg prediction`` and the uncertainty (normalised entropy) as the Image layer
``ε-Seg uncertainty``; *Suggest clicks* adds the Points layer ``ε-Seg suggested clicks``. *Export* writes a
bioimage.io package of the latest model (``python -m epsseg_monai.export bioimageio``).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from qtpy.QtCore import QObject, Signal

from .session import PRESETS, InteractiveSession, Prediction, TrainingProgress

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["EpsSegWidget", "PREDICTION_LAYER", "UNCERTAINTY_LAYER", "SUGGESTIONS_LAYER"]

PREDICTION_LAYER = "ε-Seg prediction"
UNCERTAINTY_LAYER = "ε-Seg uncertainty"
SUGGESTIONS_LAYER = "ε-Seg suggested clicks"


class _Relay(QObject):
    """Carries a worker thread's progress to the GUI thread (a queued Qt signal)."""

    progressed = Signal(object)


def suggestion_point_size(shape: tuple[int, ...]) -> float:
    """Diameter (image pixels) of the suggested-click points: 7 px, or 1/64 of the image's longest side if larger,
    so that on a whole 1024² section, shown at about half its size, they stay visible (16 px)."""
    return max(7.0, max(shape) / 64)


class EpsSegWidget(Container):
    """Dock widget driving an :class:`~epsseg_monai.napari.session.InteractiveSession` from napari layers.

    Args:
        viewer: the napari viewer whose layers it reads and adds.
        work_dir: folder for the session's rounds (default: a new temporary folder; choose one to keep them).
    """

    def __init__(self, viewer: napari.viewer.Viewer, work_dir: str | Path | None = None) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.image_layer = create_widget(annotation="napari.layers.Image", label="image")
        self.labels_layer = create_widget(annotation="napari.layers.Labels", label="clicks")
        self.minutes = FloatSpinBox(value=2.0, min=0.05, max=1440.0, step=0.5, label="minutes")
        self.preset = ComboBox(choices=list(PRESETS), value="cpu", label="preset")
        self.continue_training = CheckBox(value=True, text="continue from the last model")
        self.work_dir = FileEdit(
            mode="d", value=str(work_dir or tempfile.mkdtemp(prefix="epsseg-napari-")), label="work folder"
        )
        self.train_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(min=0, max=1000, value=0, label="progress")
        self.predict_button = PushButton(text="Predict")
        self.num_clicks = SpinBox(value=20, min=1, max=10000, label="clicks to suggest")
        self.spacing = SpinBox(value=16, min=1, max=1000, label="spacing (px)")
        self.suggest_button = PushButton(text="Suggest clicks")
        self.export_button = PushButton(text="Export bioimage.io zip")
        self.status = Label(value="Paint clicks (0 = unlabelled, 1..C = class), then Train.")
        self.extend(
            [
                self.image_layer, self.labels_layer, self.minutes, self.preset, self.continue_training,
                self.work_dir, self.train_button, self.stop_button, self.progress, self.predict_button,
                self.num_clicks, self.spacing, self.suggest_button, self.export_button, self.status,
            ]
        )  # fmt: skip
        self._session: InteractiveSession | None = None
        self._stop = threading.Event()
        self._worker: Any = None
        self.last_prediction: Prediction | None = None
        self._relay = _Relay()
        self._relay.progressed.connect(self._show_progress)
        self.train_button.changed.connect(self.start_training)
        self.stop_button.changed.connect(self.stop_training)
        self.predict_button.changed.connect(self.start_prediction)
        self.suggest_button.changed.connect(self.suggest_clicks)
        self.export_button.changed.connect(self.export)
        viewer.layers.events.inserted.connect(self._refresh_choices)
        viewer.layers.events.removed.connect(self._refresh_choices)

    # ------------------------------------------------------------------ helpers
    def _refresh_choices(self, event: Any = None) -> None:
        self.image_layer.reset_choices()
        self.labels_layer.reset_choices()

    def session(self) -> InteractiveSession:
        """The session of the current work folder and preset (a new one when either changed)."""
        work, preset = Path(self.work_dir.value), self.preset.value
        if self._session is None or self._session.work_dir != work or self._session.preset != preset:
            self._session = InteractiveSession(work, preset=preset)
        return self._session

    def _inputs(self) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.image_layer.value, self.labels_layer.value
        if image is None:
            raise ValueError("Choose an image layer.")
        if labels is None:
            raise ValueError("Add a Labels layer and paint clicks (Layers > New Labels Layer).")
        return np.asarray(image.data), np.asarray(labels.data)

    def _busy(self, busy: bool) -> None:
        for button in (self.train_button, self.predict_button, self.suggest_button, self.export_button):
            button.enabled = not busy
        self.stop_button.enabled = busy

    def _error(self, exc: BaseException) -> None:
        self._busy(False)
        self.status.value = f"Error: {exc}"
        from napari.utils.notifications import show_error

        show_error(f"ε-Seg: {exc}")

    def _show_progress(self, p: TrainingProgress) -> None:
        self.progress.value = int(1000 * p.fraction)
        best = "-" if p.best_metric is None else f"{p.best_metric:.3f}"
        self.status.value = f"epoch {p.epoch}, step {p.iteration}, loss {p.loss:.3f}, best validation Dice {best}"

    def _start(self, fn: Callable[..., Any], *args: Any, done: Callable[[Any], None]) -> Any:
        """Run ``fn(*args)`` in a napari worker thread: ``done`` gets its result, errors go to the status line."""
        from napari.qt.threading import create_worker

        self._worker = create_worker(fn, *args, _start_thread=False)
        self._worker.returned.connect(done)
        self._worker.errored.connect(self._error)
        self._worker.start()
        return self._worker

    # ------------------------------------------------------------------ actions
    def start_training(self, *_: Any) -> Any:
        """Train one round in a worker thread, then predict; returns the worker."""

        try:
            image, labels = self._inputs()
            session = self.session()
        except Exception as exc:  # shown to the user, nothing started
            self._error(exc)
            return None
        self._stop.clear()
        self._busy(True)
        self.progress.value = 0
        self.status.value = "Training..."

        def work() -> Prediction:
            session.train(
                image, labels, time_limit=60.0 * float(self.minutes.value),
                continue_training=bool(self.continue_training.value), stop=self._stop,
                progress=self._relay.progressed.emit,
            )  # fmt: skip
            return session.predict(image)

        return self._start(work, done=self._show_prediction)

    def stop_training(self, *_: Any) -> None:
        """Ask the running round to end after its current iteration (checkpoints are kept)."""
        self._stop.set()
        self.status.value = "Stopping after this iteration..."

    def start_prediction(self, *_: Any) -> Any:
        """Predict the image with the latest model in a worker thread; returns the worker."""

        try:
            image = np.asarray(self.image_layer.value.data) if self.image_layer.value is not None else None
            if image is None:
                raise ValueError("Choose an image layer.")
            session = self.session()
        except Exception as exc:
            self._error(exc)
            return None
        self._busy(True)
        self.status.value = "Predicting..."
        return self._start(session.predict, image, done=self._show_prediction)

    def _show_prediction(self, prediction: Prediction) -> None:
        self._busy(False)
        self.progress.value = 1000
        self.last_prediction = prediction
        scale = self.image_layer.value.scale if self.image_layer.value is not None else None
        for name, data, kind in (
            (PREDICTION_LAYER, prediction.labels, "labels"),
            (UNCERTAINTY_LAYER, prediction.uncertainty, "image"),
        ):
            if name in self.viewer.layers:
                self.viewer.layers[name].data = data
            elif kind == "labels":
                self.viewer.add_labels(data, name=name, opacity=0.5, scale=scale)
            else:
                self.viewer.add_image(
                    data, name=name, colormap="magma", contrast_limits=(0.0, 1.0), opacity=0.6, visible=False,
                    scale=scale,
                )  # fmt: skip
        self.status.value = f"Predicted with {prediction.model}."

    def suggest_clicks(self, *_: Any) -> np.ndarray | None:
        """Add (or replace) the Points layer of suggested clicks from the last prediction; returns the rows."""
        try:
            if self.last_prediction is None:
                raise ValueError("Train or predict first: suggestions come from the model's uncertainty.")
            labels = np.asarray(self.labels_layer.value.data) if self.labels_layer.value is not None else None
            rows = InteractiveSession.suggest(
                self.last_prediction, labels, int(self.num_clicks.value), min_distance=float(self.spacing.value)
            )
            if len(rows) == 0:
                raise ValueError(
                    f"No unlabelled pixel is {self.spacing.value} px away from every click: lower the spacing."
                )
        except Exception as exc:
            self._error(exc)
            return None
        dims = self.last_prediction.labels.ndim
        features = {"predicted_class": rows[:, dims].astype(int), "uncertainty": rows[:, dims + 1]}
        if SUGGESTIONS_LAYER in self.viewer.layers:
            self.viewer.layers.remove(SUGGESTIONS_LAYER)
        self.viewer.add_points(
            rows[:, :dims], name=SUGGESTIONS_LAYER, features=features,
            size=suggestion_point_size(self.last_prediction.labels.shape), face_color="yellow", border_color="black",
        )  # fmt: skip
        self.status.value = f"{len(rows)} suggested clicks: label them in the clicks layer, then Train again."
        return rows

    def export(self, *_: Any) -> Any:
        """Write a bioimage.io package of the latest model into the work folder (worker thread); returns the worker.

        The round's own image is the package's test input (a synthetic one where it is smaller than the package's
        minimal size).
        """

        from epsseg_monai.export import SampleImageTooSmallError, export_bioimageio

        try:
            session = self.session()
            model = session.latest_model()
            if model is None:
                raise ValueError("Train first: there is no model to export.")
        except Exception as exc:
            self._error(exc)
            return None
        round_dir = model.parent.parent
        out = session.work_dir / f"{round_dir.name}_bioimageio.zip"
        self._busy(True)
        self.status.value = "Exporting (tracing the dense predictor and writing test tensors)..."

        def done(path: Path) -> None:
            self._busy(False)
            self.status.value = f"Wrote {path}."

        def write() -> Path:
            try:  # the round's own image as the test input
                return export_bioimageio(round_dir, out, checkpoint=model, overwrite=True,
                                         sample_image=round_dir / "data" / "images" / "image.tif")  # fmt: skip
            except SampleImageTooSmallError:  # a synthetic test input of the package's minimal size instead
                return export_bioimageio(round_dir, out, checkpoint=model, overwrite=True)

        return self._start(write, done=done)
