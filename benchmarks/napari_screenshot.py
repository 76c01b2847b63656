"""The napari plugin as a user sees it: a real viewer window, a training round, a screenshot.

Opens napari (run it under a display, e.g.
``xvfb-run -s "-screen 0 1600x1000x24" python benchmarks/napari_screenshot.py``), loads a synthetic EM image
(``epsseg_monai.data.synthetic.synthetic_em``) and sparse clicks of its 4 classes, docks the ε-Seg widget, presses
*Train* (``--minutes``), waits for the prediction, presses *Suggest clicks* and saves a screenshot of the whole
window (``--output``, PNG) with the prediction, uncertainty and suggested-click layers. Prints the Dice of the
prediction against the synthetic ground truth, so the picture can be checked against numbers.

Usage::

    python benchmarks/napari_screenshot.py [--minutes 2] [--side 384] [--output bundle/docs/figures/napari_widget.png]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--side", type=int, default=384)
    parser.add_argument("--points", type=int, default=25, help="clicks per class")
    parser.add_argument("--output", default="bundle/docs/figures/napari_widget.png")
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from epsseg_monai.data.synthetic import CLASS_NAMES, sparse_points, synthetic_em
    from epsseg_monai.napari.widget import PREDICTION_LAYER, SUGGESTIONS_LAYER, UNCERTAINTY_LAYER, EpsSegWidget

    image, dense = synthetic_em((args.side, args.side), seed=3)
    clicks = sparse_points(dense, args.points, seed=0)
    viewer = napari.Viewer(title="ε-Seg in napari")
    viewer.window.resize(1600, 1000)
    viewer.add_image(image, name="EM (synthetic)")
    viewer.add_labels(clicks, name="clicks")
    widget = EpsSegWidget(viewer, work_dir=tempfile.mkdtemp(prefix="epsseg-shot-"))
    viewer.window.add_dock_widget(widget, name="ε-Seg", area="right")
    widget.minutes.value = args.minutes
    widget.start_training()
    app = QApplication.instance()
    start = time.monotonic()
    while PREDICTION_LAYER not in viewer.layers:
        app.processEvents()
        time.sleep(0.05)
        if time.monotonic() - start > 60 * args.minutes + 600:
            raise TimeoutError("no prediction after the training time + 10 minutes")
    widget.suggest_clicks()
    viewer.reset_view()  # the whole image in the canvas
    viewer.layers[UNCERTAINTY_LAYER].visible = True
    viewer.layers[UNCERTAINTY_LAYER].opacity = 0.35
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    pred = viewer.layers[PREDICTION_LAYER].data
    dice = []
    for c in range(1, len(CLASS_NAMES) + 1):
        a, b = pred == c, dense == c
        dice.append(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
    print(f"clicks {int((clicks > 0).sum())}, training {args.minutes} min, Dice per class "
          f"{[round(float(d), 3) for d in dice]}, mean {np.mean(dice):.3f}; status: {widget.status.value}")  # fmt: skip
    points = np.asarray(viewer.layers[SUGGESTIONS_LAYER].data)
    edge = np.minimum(points, np.array(image.shape) - 1 - points).min(axis=1) if len(points) else np.zeros(0)
    spacing = float(widget.spacing.value)
    print(f"{len(points)} suggested clicks, {int((edge < spacing).sum())} within {spacing:g} px of the image's edge, "
          f"nearest {edge.min() if len(edge) else float('nan'):.0f} px")  # fmt: skip
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(args.output, canvas_only=False)
    print(f"wrote {args.output}")
    viewer.close()


if __name__ == "__main__":
    main()
