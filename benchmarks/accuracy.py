"""Accuracy from sparse labels: ε-Seg vs an ilastik-style random forest and U-Nets, on the same clicks.

For each dataset (``vnc`` at ``sparse_0.05pct`` and ``sparse_0.005pct``, ``nih3t3`` at ``sparse_0.05pct``;
splits in ``benchmarks/baselines/data.py``) every method trains on the sparse training annotations only
(except the dense U-Net, the upper bound, which sees the dense labels of the same training images), predicts
every pixel of the held-out images, and is scored with per-class Dice against the dense labels (counts summed
over the held-out images). Methods:

* ``epsseg``: the bundle (``bundle/configs/train.json`` + a preset from ``bundle/configs/presets/``, or with
  ``--preset path/to/variant.json`` any preset file, to compare a variant such as ``{"num_levels": 2}``), trained
  through ``python -m monai.bundle run training`` in a subprocess with ``--time_limit`` set to the budget,
  then predicted with :class:`~epsseg_monai.inferers.DenseInferer` from the best checkpoint.
* ``epsseg_phase1``: with ``--semi_supervised_epochs N``, the bundle also runs the semi-supervised second
  phase after the phase-1 time limit (``--epsseg_budget``); this row is the phase-1 model it started from,
  ``epsseg`` the final one, both from the same run.
* ``epsseg_tta``: the final ε-Seg model with test-time augmentation (``DihedralInferer``: the mean over the 8
  rotations and flips; 8x the prediction time; the bundle's ``--tta true``).
* ``epsseg_prior``: the same ε-Seg predictions after ``AdjustClassPriors`` (``epsseg_monai.transforms``:
  EM re-estimation of each test image's class frequencies; no labels used).
* ``epsseg_tta_prior``: both, as the bundle's ``--tta true --adjust_priors true`` (the prior adjustment of the
  test-time-augmented probabilities).
* ``epsseg_calibrated``: the same ε-Seg predictions shifted towards the class shares estimated from the held-out
  clicks after training (``--calibrate_after_training true`` writes ``models/class_priors.json``; the bundle's
  ``inference.json --calibrate_priors true``; see ``benchmarks/class_shares.py`` for every strength). The
  calibration (a dense pass over the training images) runs after the time limit and is counted in ε-Seg's
  training seconds.
* ``epsseg_tta_calibrated``: the test-time-augmented probabilities shifted by the same calibration, as the bundle's
  ``--tta true`` predicts a model that has one (``--calibrate_priors auto``). The calibration was estimated from the
  plain predictions of the training images.
* ``forest``: ``benchmarks/baselines/forest.py`` (scikit-learn, 100 trees, ilastik-style filter features).
* ``unet_sparse`` / ``unet_dense``: ``benchmarks/baselines/unet.py`` (MONAI UNet, masked cross-entropy /
  dense labels) with the same wall-clock budget.

Usage (from the repository root)::

    python benchmarks/accuracy.py [--data_root ../shared/data] [--budget 1800] [--threads 2] \\
        [--datasets vnc:sparse_0.05pct vnc:sparse_0.005pct nih3t3:sparse_0.05pct] \\
        [--methods epsseg forest unet_sparse unet_dense] [--output_dir runs/accuracy] \\
        [--epsseg_budget 1200 --semi_supervised_epochs 8] [--preset cpu | VARIANT.json] [--reuse_epsseg]

With ``--curve 300 900 1800 3600 7200`` the trained methods are scored at each budget (time-to-accuracy):
ε-Seg trains once per budget (its learning-rate schedule follows the budget, as a user's ``--time_limit``),
each U-Net once to the largest budget, predicted with the weights it had at each time (its constant learning rate
makes that the same network a shorter run ends with); rows ``method@Ts`` and a plot
``learning_curve_<dataset>.png``. ``--overlays self_train`` adds ε-Seg+'s self-training phase
(``bundle/configs/self_train.json``; its budget is the preset's ``self_training_time_limit``, the phase-1 budget
``--epsseg_budget``), and the phase-1 model is scored too (``epsseg_phase1``).

Prints one table per dataset (per-class and mean Dice, training and prediction seconds per method, and for ε-Seg
the best validation Dice on the held-out clicks of the training images, the number settings are chosen by), writes
``results.json`` and a figure ``figure_<dataset>.png`` (raw | ground truth | ε-Seg | U-Net | forest on a
crop of the first held-out image) to ``--output_dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(REPO))

from benchmarks.baselines.data import BenchmarkDataset, dice_scores, load_dataset  # noqa: E402
from epsseg_monai.inferers import DenseInferer, DihedralInferer  # noqa: E402
from epsseg_monai.metrics.class_shares import load_class_priors  # noqa: E402
from epsseg_monai.transforms.overlay import colorize_labels, grey_image  # noqa: E402
from epsseg_monai.transforms.prior_adjustment import AdjustClassPriors, ShiftClassPriors  # noqa: E402

METHODS = ("epsseg", "forest", "unet_sparse", "unet_dense")
DATASETS = ("vnc:sparse_0.05pct", "vnc:sparse_0.005pct", "nih3t3:sparse_0.05pct")


def write_bundle_dataset(ds: BenchmarkDataset, root: Path) -> Path:
    """The training images and their sparse labels in the bundle's ``images/`` + ``labels/`` layout (TIFF)."""
    import tifffile

    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, image, labels in zip(ds.train_ids, ds.train_images, ds.train_sparse):
        tifffile.imwrite(root / "images" / f"{name}.tif", image.astype(np.float32))
        tifffile.imwrite(root / "labels" / f"{name}.tif", labels.astype(np.uint8))
    return root


def preset_path(preset: str) -> Path:
    """A preset name in ``bundle/configs/presets/`` (``cpu``) or the path of a JSON file (a variant to compare)."""
    path = Path(preset) if preset.endswith(".json") else REPO / "bundle" / "configs" / "presets" / f"{preset}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"ε-Seg preset {path} not found; give a name in bundle/configs/presets/ or the path of a .json file."
        )
    return path.resolve()


def overlay_paths(args: argparse.Namespace) -> list[Path]:
    """The overlay configs given with ``--overlays`` (names in ``bundle/configs/`` or paths), checked."""
    paths = []
    for overlay in getattr(args, "overlays", None) or []:
        path = Path(overlay) if overlay.endswith(".json") else REPO / "bundle" / "configs" / f"{overlay}.json"
        if not path.is_file():
            raise FileNotFoundError(f"overlay config {path} not found; give a name in bundle/configs/ or a path.")
        paths.append(path.resolve())
    return paths


def best_validation(log: Path) -> float | None:
    """The best validation mean Dice (held-out clicks) a bundle training log reports, over all phases."""
    import re

    if not log.is_file():
        return None
    values = [float(v) for v in re.findall(r"val_mean_dice: ([0-9.]+)", log.read_text(errors="replace"))]
    return max(values) if values else None


def preset_values(preset: Path) -> dict:
    return json.loads(preset.read_text())


def bundle_network(preset: Path, num_classes: int) -> torch.nn.Module:
    """The network the bundle trains with ``preset`` (``network_def`` of ``train.json`` + the preset)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundle" / "configs" / "train.json"), str(preset)])
    parser["num_classes"] = num_classes
    return parser.get_parsed_content("network_def")


def run_epsseg(
    ds: BenchmarkDataset, args: argparse.Namespace, work: Path, extra_args: list[str] | None = None
) -> tuple[dict[str, list[np.ndarray]], float, dict[str, float]]:
    """Train (or with ``--reuse_epsseg`` reload) and predict; ``extra_args`` are added to the training command
    (e.g. ``--load_pretrain true --pretrained_checkpoint PATH`` to fine-tune).

    Returns label maps of the final model (``epsseg``), with test-time augmentation (``epsseg_tta``), with
    prior adjustment (``epsseg_prior``), with both (``epsseg_tta_prior``), shifted by the calibrated class shares
    (``epsseg_calibrated``, when the training run wrote them) and, when the semi-supervised phase
    ran, of the phase-1 model it started from (``epsseg_phase1``); training seconds (both phases); prediction
    seconds per image of each.
    """
    model_dir = work / "models"
    timing = work / "train_seconds.json"
    preset = preset_path(args.preset)
    overlays = overlay_paths(args)
    if args.semi_supervised_epochs > 0:  # the paper's second phase is an overlay config
        overlays.append(REPO / "bundle" / "configs" / "semi_supervised.json")
    configs = [str(REPO / "bundle" / "configs" / "train.json"), *map(str, overlays), str(preset)]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(configs)]
    cmd += ["--bundle_root", str(REPO / "bundle"), "--dataset_dir", str(work / "data"), "--model_dir", str(model_dir)]
    cmd += ["--output_dir", str(work / "eval"), "--num_classes", str(ds.num_classes)]
    phase1_budget = args.budget if args.epsseg_budget is None else args.epsseg_budget
    cmd += ["--class_names", json.dumps(list(ds.class_names)), "--time_limit", str(int(phase1_budget))]
    cmd += ["--num_threads", str(args.threads), "--seed", str(args.seed)]  # seed: the bundle's set_determinism
    if args.semi_supervised_epochs > 0:
        cmd += ["--semi_supervised_epochs", str(args.semi_supervised_epochs)]
    calibrate = getattr(args, "calibrate", True)  # models/class_priors.json, from the held-out clicks only
    cmd += ["--calibrate_after_training", "true" if calibrate else "false"]
    cmd += ["--overwrite", "true"]  # the benchmark's own folder: a rerun retrains (unless --reuse_epsseg)
    cmd += list(extra_args or [])
    if args.reuse_epsseg:  # never retrain (and overwrite) weights the user asked to reuse
        if not timing.exists():
            raise FileNotFoundError(f"--reuse_epsseg: {timing} not found; run once without --reuse_epsseg to train.")
        train_s = json.loads(timing.read_text())["train_s"]
    else:
        write_bundle_dataset(ds, work / "data")
        log = work / "train.log"
        t = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, check=False)
        train_s = time.perf_counter() - t
        if proc.returncode:
            raise RuntimeError(f"ε-Seg training failed (exit {proc.returncode}); see {log}")
        timing.write_text(json.dumps({"train_s": train_s}))
    values = preset_values(preset)
    net = bundle_network(preset, ds.num_classes)
    # model.pt is the best validated model; a run stopped by the time limit before its first validation
    # only has the final checkpoint
    best, last = model_dir / "model.pt", model_dir / "model_last.pt"
    weights = {"epsseg": best if best.exists() else last}
    if (model_dir / "model_supervised.pt").exists():  # a second phase ran (semi-supervised or self-training)
        weights["epsseg_phase1"] = model_dir / "model_supervised.pt"
    stats = json.loads((model_dir / "intensity_stats.json").read_text())
    inferer = DenseInferer(values.get("patch_size", 64))
    tta = DihedralInferer(inferer)
    adjust = AdjustClassPriors()
    calibration = model_dir / "class_priors.json"
    shift = ShiftClassPriors(**load_class_priors(calibration, ds.num_classes)) if calibration.is_file() else None
    outcomes: dict[str, list[np.ndarray]] = {}
    pred_s: dict[str, float] = {}
    for key, path in weights.items():
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"] if "model" in state else state)
        net.eval()
        preds, adjusted, augmented, augmented_adjusted, calibrated, augmented_calibrated = [], [], [], [], [], []
        t_plain = t_tta = 0.0
        for image in ds.test_images:
            x = torch.from_numpy((image - stats["mean"][0]) / stats["std"][0]).float()[None, None]
            t = time.perf_counter()
            probs = inferer(x, net)[0]
            t_plain += time.perf_counter() - t
            preds.append(probs.argmax(0).numpy().astype(np.int64) + 1)
            if key == "epsseg" and shift is not None:
                calibrated.append(shift(probs).argmax(0).numpy().astype(np.int64) + 1)
            if key == "epsseg" and getattr(args, "tta", True):
                adjusted.append(adjust(probs).argmax(0).numpy().astype(np.int64) + 1)
                print(f"  EM class priors of a test image: {np.round(adjust.priors.numpy(), 3).tolist()}")
                t = time.perf_counter()
                tta_probs = tta(x, net)[0]
                t_tta += time.perf_counter() - t
                augmented.append(tta_probs.argmax(0).numpy().astype(np.int64) + 1)
                augmented_adjusted.append(adjust(tta_probs).argmax(0).numpy().astype(np.int64) + 1)
                if shift is not None:
                    augmented_calibrated.append(shift(tta_probs).argmax(0).numpy().astype(np.int64) + 1)
        outcomes[key] = preds
        pred_s[key] = t_plain / len(ds.test_images)
        if calibrated:
            outcomes["epsseg_calibrated"], pred_s["epsseg_calibrated"] = calibrated, pred_s[key]
        if key == "epsseg" and getattr(args, "tta", True):
            outcomes["epsseg_tta"], pred_s["epsseg_tta"] = augmented, t_tta / len(ds.test_images)
            outcomes["epsseg_prior"], pred_s["epsseg_prior"] = adjusted, pred_s[key]
            outcomes["epsseg_tta_prior"], pred_s["epsseg_tta_prior"] = augmented_adjusted, pred_s["epsseg_tta"]
            if augmented_calibrated:
                outcomes["epsseg_tta_calibrated"] = augmented_calibrated
                pred_s["epsseg_tta_calibrated"] = pred_s["epsseg_tta"]
    return outcomes, train_s, pred_s


def run_baseline(
    method: str, ds: BenchmarkDataset, args: argparse.Namespace, curve: list[float] | None = None
) -> tuple[dict[str, list[np.ndarray]], dict[str, float], dict[str, float]]:
    """Train and predict a baseline; with ``curve`` (U-Nets) one run to ``max(curve)`` seconds, predicted with
    the weights it had at each time (rows ``method@Ts``). Returns label maps, training and prediction seconds."""
    if method == "forest":
        from benchmarks.baselines.forest import RandomForestBaseline

        model = RandomForestBaseline(n_jobs=args.threads)
        labels = ds.train_sparse
        curve = None
    else:
        from benchmarks.baselines.unet import UNetBaseline

        dense = method == "unet_dense"
        budget = max(curve) if curve else args.budget
        model = UNetBaseline(ds.num_classes, dense=dense, time_budget_s=budget, seed=args.seed)
        labels = ds.train_dense if dense else ds.train_sparse
    t = time.perf_counter()
    if curve:
        model.fit(list(ds.train_images), list(labels), snapshot_times=curve)
    else:
        model.fit(list(ds.train_images), list(labels))
    train_s = time.perf_counter() - t
    outcomes, train_times, pred_times = {}, {}, {}
    for point in curve or [None]:
        key = method if point is None else f"{method}@{point:g}s"
        t = time.perf_counter()
        if point is None:
            outcomes[key] = [np.asarray(model.predict(image)).astype(np.int64) for image in ds.test_images]
        else:
            outcomes[key] = [np.asarray(model.predict(im, snapshot=point)).astype(np.int64) for im in ds.test_images]
        pred_times[key] = (time.perf_counter() - t) / len(ds.test_images)
        train_times[key] = train_s if point is None else min(point, train_s)
    return outcomes, train_times, pred_times


def run_epsseg_curve(
    ds: BenchmarkDataset, args: argparse.Namespace, folder: Path, curve: list[float]
) -> tuple[dict[str, list[np.ndarray]], dict[str, float], dict[str, float], dict[str, float | None]]:
    """ε-Seg trained once per budget of ``curve`` (its learning-rate schedule follows the budget, as a user's run
    with that ``--time_limit`` does); rows ``epsseg@Ts`` (plain prediction, no TTA) and ``epsseg_calibrated@Ts``."""
    outcomes, train_times, pred_times, vals = {}, {}, {}, {}
    for point in curve:
        run_args = argparse.Namespace(**{**vars(args), "budget": point, "epsseg_budget": None, "tta": False})
        work = folder / f"epsseg_{point:g}s"
        out, train_s, pred_s = run_epsseg(ds, run_args, work)
        key = f"epsseg@{point:g}s"
        outcomes[key], train_times[key], pred_times[key] = out["epsseg"], train_s, pred_s["epsseg"]
        vals[key] = best_validation(work / "train.log")
        if "epsseg_calibrated" in out:
            cal = f"epsseg_calibrated@{point:g}s"
            outcomes[cal], train_times[cal], pred_times[cal] = out["epsseg_calibrated"], train_s, pred_s["epsseg"]
            vals[cal] = vals[key]
    return outcomes, train_times, pred_times, vals


CURVE_LABELS = {
    "epsseg": "ε-Seg (preset)",
    "epsseg_calibrated": "ε-Seg (preset), calibrated",
    "unet_sparse": "U-Net, sparse clicks",
    "unet_dense": "U-Net, dense labels",
}


def learning_curve_plot(rows: dict[str, dict], title: str, path: Path, labels: dict[str, str] | None = None) -> bool:
    """Mean Dice against training minutes of the ``method@Ts`` rows, one line per method (matplotlib, PNG).

    Args:
        rows: ``results.json`` rows; those named ``method@Ts`` are drawn, a ``forest`` row as a dashed line; a row
            with ``dice_min`` / ``dice_max`` (a mean of several runs) gets an error bar spanning them.
        title: the plot's title.
        path: the PNG to write.
        labels: legend text per method (default :data:`CURVE_LABELS`, else the method's name).

    Returns ``False`` (nothing written) when there are no curve rows or matplotlib is not installed.
    """
    curves: dict[str, list[tuple[float, float, dict]]] = {}
    for key, row in rows.items():
        if "@" in key:
            method, point = key.split("@")
            curves.setdefault(method, []).append((float(point.rstrip("s")) / 60, row["mean_dice"], row))
    if not curves:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[benchmarks]'): no learning-curve plot")
        return False
    names = {**CURVE_LABELS, **(labels or {})}
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method, points in sorted(curves.items()):
        points.sort(key=lambda p: p[0])
        xs, ys, spread = [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]
        if any("dice_min" in row for row in spread):  # several runs averaged: bars show their range
            low = [y - row.get("dice_min", y) for y, row in zip(ys, spread)]
            high = [row.get("dice_max", y) - y for y, row in zip(ys, spread)]
            ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=names.get(method, method))
        else:
            ax.plot(xs, ys, marker="o", label=names.get(method, method))
    for method in ("forest",):
        if method in rows:
            ax.axhline(rows[method]["mean_dice"], color="grey", linestyle="--", label="random forest")
    ax.set_xscale("log")
    ticks = sorted({p[0] for points in curves.values() for p in points})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())  # no "6x10^0" labels between the budgets on the log axis
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("mean Dice (test images)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")  # the curves rise to the upper right
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def figure(ds: BenchmarkDataset, preds: dict[str, list[np.ndarray]], path: Path, crop: int = 384) -> None:
    """raw | ground truth | ε-Seg [phase 1 | + semi-supervised] | U-Net (sparse) | forest, top-left ``crop``."""
    from PIL import Image, ImageDraw

    panels = [("raw", np.repeat(grey_image(ds.test_images[0][:crop, :crop])[..., None], 3, axis=-1))]
    panels.append(("ground truth", colorize_labels(ds.test_dense[0][:crop, :crop])))
    semi = "epsseg_phase1" in preds  # then "epsseg" is the model after the semi-supervised phase
    methods = [("epsseg_phase1", "eps-Seg (phase 1)"), ("epsseg", "eps-Seg + semi-sup." if semi else "eps-Seg")]
    methods += [("unet_sparse", "U-Net (sparse clicks)"), ("forest", "random forest")]
    for method, title in methods:
        if method in preds:
            panels.append((title, colorize_labels(preds[method][0][:crop, :crop])))
    h, w = panels[0][1].shape[:2]
    canvas = Image.new("RGB", (len(panels) * (w + 4), h + 18), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, array) in enumerate(panels):
        canvas.paste(Image.fromarray(array), (i * (w + 4), 18))
        draw.text((i * (w + 4) + 2, 2), title, fill="black")
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=None, help="benchmark data (default ../shared/data)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="name:density entries")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--budget", type=float, default=1800.0, help="training seconds per trained method")
    parser.add_argument(
        "--preset", default="cpu", help="ε-Seg preset: a name in bundle/configs/presets/ or a .json path"
    )
    parser.add_argument("--epsseg_budget", type=float, default=None, help="ε-Seg phase-1 seconds (default: --budget)")
    parser.add_argument(
        "--semi_supervised_epochs",
        type=int,
        default=0,
        help="ε-Seg semi-supervised epochs after phase 1 (adds the phase-1 model as row epsseg_phase1)",
    )
    parser.add_argument(
        "--overlays",
        nargs="+",
        default=[],
        help="ε-Seg overlay configs between train.json and the preset (e.g. self_train: ε-Seg+'s self-training)",
    )
    parser.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=True, help="also score ε-Seg with TTA / priors"
    )
    parser.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="calibrate ε-Seg's class shares after training (row epsseg_calibrated; counted in its training seconds)",
    )
    parser.add_argument(
        "--curve",
        nargs="+",
        type=float,
        default=None,
        help="learning curve: training budgets in seconds (e.g. 300 900 1800 3600 7200); ε-Seg trains once per "
        "budget, each U-Net once to the largest with snapshots; rows method@Ts and learning_curve_<dataset>.png",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of ε-Seg's training and of the U-Nets")
    parser.add_argument("--output_dir", default="runs/accuracy")
    parser.add_argument(
        "--reuse_epsseg", action="store_true", help="reuse ε-Seg weights trained by an earlier run in --output_dir"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    dense_done: dict[str, dict] = {}
    print(f"date {time.strftime('%Y-%m-%d %H:%M')}, {torch.get_num_threads()} threads, budget {args.budget:.0f} s")
    for entry in args.datasets:
        name, density = entry.split(":")
        ds = load_dataset(name, args.data_root, density=density)
        preds: dict[str, list[np.ndarray]] = {}
        rows = {}
        folder = out / f"{name}_{density}"
        for method in args.methods:
            if method == "unet_dense" and name in dense_done:  # dense labels do not depend on the density
                rows[method] = dense_done[name]
                continue
            vals: dict[str, float | None] = {}
            try:
                if args.curve and method == "epsseg":
                    outcomes, train_times, pred_times, vals = run_epsseg_curve(ds, args, folder, args.curve)
                elif method == "epsseg":
                    outcomes, train_s, pred_times = run_epsseg(ds, args, folder / "epsseg")
                    train_times = dict.fromkeys(outcomes, train_s)
                    vals = dict.fromkeys(outcomes, best_validation(folder / "epsseg" / "train.log"))
                else:
                    outcomes, train_times, pred_times = run_baseline(method, ds, args, args.curve)
            except Exception as err:  # keep the other methods' results
                print(f"[{entry}] {method} failed: {err}")
                continue
            for key, p in outcomes.items():
                pred_s, train_s = pred_times[key], train_times[key]
                per_class, mean = dice_scores(p, list(ds.test_dense), ds.num_classes)
                rows[key] = {"dice": per_class, "mean_dice": mean, "train_s": train_s, "predict_s_per_image": pred_s}
                if vals.get(key) is not None:
                    rows[key]["val_mean_dice"] = vals[key]  # held-out clicks of the training images
                preds[key] = p
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / f"first_test_prediction_{key}.npy", p[0].astype(np.uint8))
                print(f"[{entry}] {key}: mean Dice {mean:.3f}, train {train_s:.0f} s, predict {pred_s:.1f} s/image")
            if method == "unet_dense" and method in rows:
                dense_done[name] = rows[method]
        previous = results.get(entry, {}).get("methods", {})
        rows = {**previous, **rows}
        results[entry] = {"class_names": list(ds.class_names), "budget_s": args.budget, "methods": rows}
        results_path.write_text(json.dumps(results, indent=2))
        header = " | ".join(ds.class_names)
        print(f"\n{entry} (test: {', '.join(ds.test_ids)})")
        print(f"| method | {header} | mean | train s | predict s/image | val. Dice (clicks) |")
        print("|---" * (len(ds.class_names) + 5) + "|")
        for method, row in rows.items():
            scores = " | ".join(f"{s:.3f}" for s in row["dice"])
            val = f"{row['val_mean_dice']:.3f}" if row.get("val_mean_dice") is not None else "-"
            print(
                f"| {method} | {scores} | {row['mean_dice']:.3f} | {row['train_s']:.0f} | "
                f"{row['predict_s_per_image']:.1f} | {val} |"
            )
        if learning_curve_plot(rows, f"{name} {density}", out / f"learning_curve_{name}_{density}.png"):
            print(f"learning curve: {out / f'learning_curve_{name}_{density}.png'}")
        saved = {
            path.stem.removeprefix("first_test_prediction_"): [np.load(path)]
            for path in sorted((out / f"{name}_{density}").glob("first_test_prediction_*.npy"))
        }
        if {"epsseg", "unet_sparse", "forest"} <= set(saved):  # a partial rerun keeps the earlier figure
            figure(ds, saved, out / f"figure_{name}_{density}.png")


if __name__ == "__main__":
    main()
