"""Class-share calibration of a trained ε-Seg model, chosen on held-out clicks, scored on the dense test labels.

ε-Seg is trained on class-balanced clicks, so its probabilities assume equal class frequencies and rare classes
are over-predicted (VNC: mitochondria precision about 0.5). This benchmark takes a model trained by
``benchmarks/accuracy.py`` and, using only what a user has (the training images and the held-out 20 % of the
clicks, the bundle's own split):

1. predicts every pixel of the training images (``DenseInferer``), giving the predicted share of each class and
   the probabilities at the held-out clicks;
2. estimates the true class shares from them (:func:`epsseg_monai.metrics.estimate_class_shares`, adjusted count);
3. for each prior-shift strength ``t`` (``ShiftClassPriors``: ``p_c (s_c / (1/C)) ** t``) estimates the dense mean
   Dice from the held-out clicks (:func:`epsseg_monai.metrics.estimated_dense_dice`), next to the plain click
   Dice, and picks the strength with the highest estimate (:func:`epsseg_monai.metrics.select_prior_strength`);
4. only then scores every strength on the dense labels of the test images (for the report, not for choosing).

Usage (from the repository root, after ``benchmarks/accuracy.py ... --methods epsseg --output_dir RUN``)::

    python benchmarks/class_shares.py --run_dir RUN/vnc_sparse_0.05pct/epsseg --seed 0 \\
        [--data_root ../shared/data] [--dataset vnc:sparse_0.05pct] [--amp auto] [--threads 2]

The network is built from the run's ``models/network.json`` (what training wrote next to the weights, the one
source for the model), and the dense passes run in the precision of the bundle's calibration (``--amp``, its
``--val_amp``; ``auto`` is bfloat16 where the CPU supports it), so that the strength chosen here is the bundle's
(before its bootstrap check, ``benchmarks/calibration_confidence.py``).
``--seed`` must be the seed the model was trained with (it seeds the bundle's click split). Prints one table and
writes ``class_shares.json`` into ``--run_dir``. The dense shares of the training images are printed for
comparison only; nothing uses them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.baselines.data import dice_scores  # noqa: E402
from benchmarks.calibration_confidence import held_out_items, load_run  # noqa: E402
from epsseg_monai.inferers import DenseInferer  # noqa: E402
from epsseg_monai.metrics import (  # noqa: E402
    DEFAULT_STRENGTHS,
    click_confusion,
    dice_counts,
    dice_from_counts,
    estimate_class_shares,
    estimated_dense_dice,
    predict_at_clicks,
    select_prior_strength,
)
from epsseg_monai.transforms import shift_class_priors  # noqa: E402

STRENGTHS = DEFAULT_STRENGTHS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="the ε-Seg folder of an accuracy.py run (holds models/)")
    parser.add_argument("--seed", type=int, default=0, help="the seed the model was trained with (click split)")
    parser.add_argument("--val_fraction", type=float, default=0.2, help="the bundle's --val_fraction")
    parser.add_argument("--data_root", default=None)
    parser.add_argument("--dataset", default="vnc:sparse_0.05pct")
    parser.add_argument("--amp", default="auto", help="precision of the bundle's calibration (its --val_amp)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    run = Path(args.run_dir)
    model = run / "models" / "model.pt"
    if not model.is_file():
        raise FileNotFoundError(f"{model} not found; train with benchmarks/accuracy.py --methods epsseg first.")
    net, config, stats = load_run(run)
    # what a user has: the training images and the held-out clicks (the bundle's split)
    held_out, ds = held_out_items(args.dataset, args.seed, args.data_root, stats, args.val_fraction)
    c = ds.num_classes
    if config["network"]["num_classes"] != c:
        raise ValueError(
            f"{run / 'models' / 'network.json'} has {config['network']['num_classes']} classes and {args.dataset} has "
            f"{c}; give the --dataset the model was trained on."
        )
    inferer = DenseInferer(config["network"]["patch_size"], amp=args.amp)

    def probabilities(image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy((image - stats["mean"][0]) / stats["std"][0]).float()[None, None]
        with torch.no_grad():
            return inferer(x, net)[0].double()

    # 1. the calibration from the held-out clicks
    t0 = time.perf_counter()
    predicted, click_probs_t, click_labels_t = predict_at_clicks(net, held_out, inferer, c)
    q = predicted / predicted.sum()
    confusion = click_confusion(click_probs_t.argmax(0) + 1, click_labels_t, c)
    clicks = sum(torch.bincount(torch.from_numpy(sparse[sparse > 0]) - 1, minlength=c) for sparse in ds.train_sparse)
    train_clicks = clicks - confusion.sum(1)  # every click that is not held out
    shares = estimate_class_shares(confusion, q)
    true_shares = torch.bincount(torch.from_numpy(ds.train_dense).reshape(-1) - 1, minlength=c).double()
    true_shares /= true_shares.sum()
    best, estimates = select_prior_strength(click_probs_t, click_labels_t, shares, STRENGTHS)
    calibrate_s = time.perf_counter() - t0

    # 2. the report: every strength on the test images' dense labels
    test_probs = [probabilities(image) for image in ds.test_images]
    rows = []
    for strength in STRENGTHS:
        shifted = shift_class_priors(click_probs_t, shares, strength)
        click_dice = dice_from_counts(dice_counts(shifted.argmax(0) + 1, click_labels_t, c)).nanmean().item()
        conf = click_confusion(shifted.argmax(0) + 1, click_labels_t, c)
        est_true = float(np.nanmean(estimated_dense_dice(conf, true_shares).numpy()))
        preds = [(shift_class_priors(p, shares, strength).argmax(0) + 1).numpy() for p in test_probs]
        per_class, mean = dice_scores(preds, list(ds.test_dense), c)
        rows.append(
            {
                "strength": strength,
                "click_dice": click_dice,
                "estimated_dense_dice": estimates[strength],
                "estimated_with_true_shares": est_true,
                "test_dice": mean,
                "test_per_class": per_class,
            }
        )

    print(
        f"{args.dataset}, {run}: {int(click_labels_t.numel())} held-out clicks {confusion.sum(1).tolist()}, "
        f"training clicks {train_clicks.tolist()}, calibration {calibrate_s:.0f} s"
    )
    print(f"predicted shares (training images): {np.round(q.numpy(), 4).tolist()}")
    print(f"estimated true shares:              {np.round(shares.numpy(), 4).tolist()}")
    print(f"dense shares (for comparison only): {np.round(true_shares.numpy(), 4).tolist()}")
    print(f"chosen strength: {best}")
    header = "| strength | click Dice | est. dense Dice | est. (true shares) | test mean | "
    header += " | ".join(ds.class_names)
    print(header + " |")
    print("|" + "---|" * (5 + c))
    for r in rows:
        mark = " (chosen)" if r["strength"] == best else ""
        cells = [f"{r['strength']:.1f}{mark}", f"{r['click_dice']:.3f}", f"{r['estimated_dense_dice']:.3f}"]
        cells += [f"{r['estimated_with_true_shares']:.3f}", f"{r['test_dice']:.3f}"]
        cells += [f"{v:.3f}" for v in r["test_per_class"]]
        print("| " + " | ".join(cells) + " |")
    report = {
        "dataset": args.dataset,
        "seed": args.seed,
        "predicted_shares": q.tolist(),
        "estimated_shares": shares.tolist(),
        "dense_shares": true_shares.tolist(),
        "held_out_clicks": confusion.sum(1).tolist(),
        "chosen_strength": best,
        "rows": rows,
    }
    (run / "class_shares.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
