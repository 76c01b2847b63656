"""Would the bootstrap check of the class-share calibration (``--calibration_confidence``) have kept each shift?

The calibration (``--calibrate_after_training true``) picks, of 11 prior-shift strengths, the one whose dense
mean Dice estimated from the held-out clicks is highest. With few clicks (36 per class at VNC 0.005 %) that
estimate is noisy, and the best of 11 noisy estimates is optimistic. ``--calibration_confidence P`` keeps the
shift only where a bootstrap of the held-out clicks finds it better than no shift in at least a share ``P`` of
the resamples (:func:`epsseg_monai.metrics.shift_gain_confidence`).

For models trained by ``benchmarks/accuracy.py`` (ε-Seg with the calibration), this recomputes the
probabilities at the held-out clicks (the bundle's click split; a dense pass over the training images with
``DenseInferer`` in the precision of the bundle's calibration, as the bundle calibrates), checks that the
recorded strength is reproduced, and prints the bootstrap confidence of that strength's gain and the strength kept
at each confidence level. It uses no dense label: what it would
change on the test images follows from the rows ``epsseg`` (no shift) and ``epsseg_calibrated`` of each run.

Usage (from the repository root)::

    python benchmarks/calibration_confidence.py --data_root ../shared/data \\
        --run vnc:sparse_0.005pct,0,RUN/vnc_sparse_0.005pct/epsseg [--run DATASET,SEED,FOLDER ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.baselines.data import load_dataset  # noqa: E402
from epsseg_monai.inferers import DenseInferer  # noqa: E402
from epsseg_monai.metrics import (  # noqa: E402
    click_confusion,
    estimate_class_shares,
    predict_at_clicks,
    select_prior_strength,
    shift_gain_confidence,
)
from epsseg_monai.networks import load_network_config  # noqa: E402
from epsseg_monai.networks.nets import EpsSegHVAE  # noqa: E402
from epsseg_monai.transforms import SplitSparseLabels  # noqa: E402

LEVELS = (0.8, 0.9, 0.95)


def load_run(run: Path) -> tuple[EpsSegHVAE, dict, dict]:
    """The trained network (eval mode), its ``network.json`` and its intensity statistics, from a run's ``models/``."""
    models = run / "models"
    config = load_network_config(models / "network.json")
    net = EpsSegHVAE(**config["network"])
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state["model"] if "model" in state else state)
    net.eval()
    return net, config, json.loads((models / "intensity_stats.json").read_text())


def held_out_items(dataset: str, seed: int, data_root: str | None, stats: dict, val_fraction: float):
    """The training images (normalised like the bundle) with only their held-out clicks, and the dataset."""
    name, density = dataset.split(":")
    ds = load_dataset(name, data_root, density=density)
    split = SplitSparseLabels(val_fraction, part="val", seed=seed)
    items = []
    for image, sparse in zip(ds.train_images, ds.train_sparse):
        held = split.held_out(sparse) & (sparse > 0)
        x = ((image - stats["mean"][0]) / stats["std"][0])[None].astype(np.float32)
        items.append({"image": x, "label": np.where(held, sparse, 0)})
    return items, ds


def held_out_probabilities(run: Path, dataset: str, seed: int, data_root: str | None, amp: str, val_fraction: float):
    """Probabilities ``(C, N)`` and class ids ``(N,)`` at the held-out clicks of a run's training images."""
    net, config, stats = load_run(run)
    items, ds = held_out_items(dataset, seed, data_root, stats, val_fraction)
    inferer = DenseInferer(config["network"]["patch_size"], amp=amp)
    predicted, probs, labels = predict_at_clicks(net, items, inferer, ds.num_classes)
    return probs, labels, ds.num_classes, predicted / predicted.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="DATASET,SEED,FOLDER (the ε-Seg folder)")
    parser.add_argument("--data_root", default=None)
    parser.add_argument("--val_fraction", type=float, default=0.2, help="the bundle's --val_fraction")
    parser.add_argument("--amp", default="auto", help="precision of the bundle's calibration (its --val_amp)")
    parser.add_argument("--resamples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = "| run | held-out clicks per class | recorded strength (est. gain) | reproduced strength (est. gain) | "
    header += "bootstrap confidence | " + " | ".join(f"kept at {p:g}" for p in LEVELS) + " |"
    print(header)
    print("|" + "---|" * (5 + len(LEVELS)))
    for spec in args.run:
        dataset, seed, folder = spec.split(",", 2)
        run = Path(folder)
        recorded = json.loads((run / "models" / "class_priors.json").read_text())
        probs, labels, c, q = held_out_probabilities(
            run, dataset, int(seed), args.data_root, args.amp, args.val_fraction
        )
        confusion = click_confusion(probs.argmax(0) + 1, labels, c)
        shares = estimate_class_shares(confusion, q)
        best, estimates = select_prior_strength(probs, labels, shares)
        confidence = shift_gain_confidence(probs, labels, shares, best, q, num_resamples=args.resamples, seed=int(seed))
        rec = recorded["estimated_dense_dice"]
        rec_gain = rec[f"{recorded['strength']:g}"] - rec["0"]
        kept = " | ".join(f"{best if confidence >= p else 0.0:g}" for p in LEVELS)
        print(
            f"| {dataset} seed {seed} ({run.parent.parent.name}) | {confusion.sum(1).tolist()} | "
            f"{recorded['strength']:g} ({rec_gain:+.3f}) | {best:g} ({estimates[best] - estimates[0.0]:+.3f}) | "
            f"{confidence:.2f} | {kept} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
