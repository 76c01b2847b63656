"""The napari dock widget in a real viewer (under Xvfb or on a desktop).

Skipped, with the reason, where napari (the ``[napari]`` extra), pytest-qt, a Qt binding or a display is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari", reason="napari is not installed (pip install 'epsseg-monai[napari]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (needed for napari's make_napari_viewer)")
try:
    from qtpy import QtWidgets  # noqa: F401
except Exception as e:  # no Qt binding, or no libraries to load it
    pytest.skip(f"Qt is not available: {e}", allow_module_level=True)


def _qt_start_failure() -> str | None:
    """Why a ``QApplication`` cannot start here (None where it can), found in a child process.

    Qt aborts the whole process when it finds no display or cannot load its platform plugin (the xcb libraries),
    so this is probed in a child, not in the test process.
    """
    probe = "from qtpy.QtWidgets import QApplication; QApplication([])"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(" ")]
    return next((line for line in lines if "qt.qpa" in line or "display" in line.lower()), lines[-1] if lines else "")


if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
    pytest.skip("Qt's offscreen platform has no OpenGL for napari's canvas: use xvfb-run", allow_module_level=True)
_failure = _qt_start_failure()
if _failure is not None:
    pytest.skip(
        f"Qt cannot start a window here ({_failure}): run under Xvfb (xvfb-run -a python -m pytest tests/napari) "
        "with Qt's xcb libraries (apt-get install xvfb libxcb-cursor0 libxcb-icccm4 libxkbcommon-x11-0 ...)",
        allow_module_level=True,
    )

from test_napari_session import TINY, two_class_image  # noqa: E402

from epsseg_monai.napari import InteractiveSession  # noqa: E402
from epsseg_monai.napari.widget import (  # noqa: E402
    PREDICTION_LAYER,
    SUGGESTIONS_LAYER,
    UNCERTAINTY_LAYER,
    EpsSegWidget,
    suggestion_point_size,
)


@pytest.fixture
def widget(make_napari_viewer, tmp_path: Path) -> EpsSegWidget:
    viewer = make_napari_viewer()
    image, clicks = two_class_image()
    viewer.add_image(image, name="em")
    viewer.add_labels(clicks, name="clicks")
    w = EpsSegWidget(viewer, work_dir=tmp_path / "work")
    viewer.window.add_dock_widget(w, name="ε-Seg")
    w._session = InteractiveSession(tmp_path / "work", preset="cpu", overrides=TINY)  # a tiny network
    return w


def test_paint_train_predict_suggest(widget: EpsSegWidget, qtbot) -> None:
    viewer = widget.viewer
    assert widget.image_layer.value.name == "em" and widget.labels_layer.value.name == "clicks"
    worker = widget.start_training()
    assert worker is not None and not widget.train_button.enabled and widget.stop_button.enabled
    qtbot.waitUntil(lambda: PREDICTION_LAYER in viewer.layers, timeout=180_000)
    pred = viewer.layers[PREDICTION_LAYER].data
    assert pred.shape == viewer.layers["em"].data.shape and set(np.unique(pred)) <= {1, 2}
    unc = viewer.layers[UNCERTAINTY_LAYER].data
    assert unc.shape == pred.shape and 0.0 <= unc.min() and unc.max() <= 1.0 + 1e-6
    assert widget.train_button.enabled and not widget.stop_button.enabled
    assert widget.progress.value == 1000 and "Predicted with" in widget.status.value

    widget.spacing.value = 40  # on this 40² image every pixel is within 40 px of a click: nothing to suggest
    assert widget.suggest_clicks() is None and "lower the spacing" in widget.status.value
    widget.spacing.value = 4
    rows = widget.suggest_clicks()
    points = viewer.layers[SUGGESTIONS_LAYER]
    assert rows is not None and len(points.data) == len(rows) > 0
    assert set(points.features["predicted_class"]) <= {1, 2}
    assert np.all(points.size == 7)  # a 40² image: the smallest points; a 1024² section gets 16 px ones
    assert suggestion_point_size((1024, 1024)) == 16 and suggestion_point_size((40, 40)) == 7

    # label the suggestions, train again: a second round that continues from the first
    clicks = viewer.layers["clicks"].data
    for y, x in rows[:, :2].astype(int):
        clicks[y, x] = 1 if x < clicks.shape[1] // 2 else 2
    viewer.layers["clicks"].data = clicks
    first = widget.session().latest_model()
    widget.start_training()
    widget.stop_training()  # stop at once: the round ends after one iteration and is still predicted
    qtbot.waitUntil(lambda: widget.train_button.enabled, timeout=180_000)
    latest = widget.session().latest_model()
    assert latest.parent.parent.name == "round001" and first.is_file()
    assert "Predicted with" in widget.status.value


def test_errors_are_shown_not_raised(widget: EpsSegWidget) -> None:
    widget.viewer.layers.remove("clicks")
    assert widget.start_training() is None
    assert widget.status.value.startswith("Error:") and "Labels layer" in widget.status.value
    assert widget.suggest_clicks() is None and "Train or predict first" in widget.status.value
    assert widget.train_button.enabled


def test_export_button_writes_a_package_that_bioimageio_test_accepts(widget: EpsSegWidget, qtbot) -> None:
    pytest.importorskip("bioimageio.core", reason="bioimageio.core is not installed (the [bioimageio] extra)")
    from bioimageio.core import test_model

    assert widget.export() is None and "Train first" in widget.status.value
    widget.start_training()
    qtbot.waitUntil(lambda: PREDICTION_LAYER in widget.viewer.layers, timeout=180_000)
    worker = widget.export()
    assert worker is not None and not widget.export_button.enabled
    qtbot.waitUntil(lambda: widget.status.value.startswith(("Wrote", "Error")), timeout=300_000)
    assert widget.status.value.startswith("Wrote") and widget.export_button.enabled, widget.status.value
    package = widget.session().work_dir / "round000_bioimageio.zip"
    assert package.is_file()
    assert test_model(package).status == "passed"
