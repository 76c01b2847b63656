"""The napari plugin as a user sees it: a real viewer window, a training round, a screenshot.

Opens napari (run it under a display, e.g.
``xvfb-run -s "-screen 0 1600x1000x24" python benchmarks/napari_screenshot.py``), loads a synthetic EM image
(``epsseg_monai.data.synthetic.synthetic_em``) and sparse clicks of its 4 classes, or with ``--data_root`` the
top-left ``--side`` pixels of a real VNC ssTEM section and its 0.05 % point annotations (``--section``, from the
benchmark data, never committed), docks the ε-Seg widget, presses
*Train* (``--minutes``), waits for the prediction, presses *Suggest clicks* and saves a screenshot of the whole
window (``--output``, PNG) with the prediction, uncertainty and suggested-click layers. Prints the Dice of the
prediction against the (synthetic or dense) ground truth, so the picture can be checked against numbers.

Usage::

    python benchmarks/napari_screenshot.py [--minutes 2] [--side 384] [--output bundle/docs/figures/napari_widget.png]
    python benchmarks/napari_screenshot.py --data_root ../shared/data --section 0 --side 1024 --minutes 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--side", type=int, default=384)
    parser.add_argument("--points", type=int, default=25, help="clicks per class")
    parser.add_argument("--output", default="bundle/docs/figures/napari_widget.png")
    parser.add_argument("--preset", default="cpu", help="the widget's preset: cpu or plus (ε-Seg+)")
    parser.add_argument("--data_root", default=None, help="benchmark data (vnc/ inside): a real section, not synthetic")
    parser.add_argument("--section", type=int, default=0, help="VNC section with --data_root")
    parser.add_argument("--density", default="sparse_0.05pct", help="VNC point annotations with --data_root")
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from benchmarks.baselines.data import dice_scores, load_dataset
    from epsseg_monai.data.synthetic import sparse_points, synthetic_em
    from epsseg_monai.napari.widget import PREDICTION_LAYER, SUGGESTIONS_LAYER, UNCERTAINTY_LAYER, EpsSegWidget

    if args.data_root:  # the benchmark's own loader: its checks name a missing file and the fix
        ds = load_dataset("vnc", args.data_root, args.density)
        stem, crop = f"{args.section:02d}", (slice(0, args.side),) * 2
        if stem not in ds.train_ids:
            raise SystemExit(f"--section {args.section}: point annotations exist for the sections {ds.train_ids}.")
        i = ds.train_ids.index(stem)
        image, dense, clicks = ds.train_images[i][crop], ds.train_dense[i][crop], ds.train_sparse[i][crop]
        clicks = clicks.astype(np.uint8)
        image_name = f"VNC ssTEM section {stem}"
    else:
        image, dense = synthetic_em((args.side, args.side), seed=3)
        clicks = sparse_points(dense, args.points, seed=0)
        image_name = "EM (synthetic)"
    viewer = napari.Viewer(title="ε-Seg in napari")
    viewer.window.resize(1600, 1000)
    viewer.add_image(image, name=image_name)
    viewer.add_labels(clicks, name="clicks")
    widget = EpsSegWidget(viewer, work_dir=tempfile.mkdtemp(prefix="epsseg-shot-"))
    viewer.window.add_dock_widget(widget, name="ε-Seg", area="right")
    widget.minutes.value = args.minutes
    widget.preset.value = args.preset
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
    dice, mean = dice_scores([pred], [dense], int(dense.max()))
    print(f"clicks {int((clicks > 0).sum())}, preset {args.preset}, training {args.minutes} min, Dice per class "
          f"{[round(float(d), 3) for d in dice]}, mean {mean:.3f}; status: {widget.status.value}")  # fmt: skip
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
