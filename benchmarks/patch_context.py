"""How far is patch-mode validation from the dense map the user gets? Click Dice by the context a prediction sees.

Validation in patch mode (``--val_mode patch``) classifies each held-out click from the patch around it, with the
network's zero padding at the patch's edge; ``DenseInferer`` (prediction, calibration, the test) computes the
network on the whole image, where those edges do not exist. The two agree only for patches wider than the
receptive field. For a model trained by ``benchmarks/accuracy.py`` this prints, on the held-out clicks of its
training images (the bundle's click split; no dense label is used): the click mean Dice of the dense pass, and of
patch mode at each ``--sizes`` (with the share of clicks where it predicts the dense pass's class), and the
seconds each took.

Usage (from the repository root)::

    python benchmarks/patch_context.py --data_root ../shared/data \\
        --run vnc:sparse_0.05pct,0,RUN/vnc_sparse_0.05pct/epsseg [--run ...] [--sizes 64 96 128 192]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.calibration_confidence import held_out_items, load_run  # noqa: E402
from epsseg_monai.inferers import DenseInferer, PatchCenterInferer  # noqa: E402
from epsseg_monai.metrics import dice_counts, dice_from_counts, predict_at_clicks  # noqa: E402


def click_mean_dice(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean Dice over the classes present, counted on clicks (class ids ``1..C``), as the bundle's validation."""
    return float(torch.nanmean(dice_from_counts(dice_counts(pred, labels, num_classes))))


def compare_to_dense(
    dense: torch.Tensor, patch: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """Click mean Dice of both predictions (class ids at the same clicks) and the share of clicks where they agree."""
    if not dense.shape == patch.shape == labels.shape:
        shapes = f"dense {tuple(dense.shape)}, patch {tuple(patch.shape)} and labels {tuple(labels.shape)}"
        raise ValueError(f"{shapes} differ.")
    return {
        "dense_dice": click_mean_dice(dense, labels, num_classes),
        "patch_dice": click_mean_dice(patch, labels, num_classes),
        "agreement": float((dense == patch).double().mean()) if len(labels) else float("nan"),
    }


def patch_predictions(net: torch.nn.Module, items: list[dict], size: int, amp: str) -> torch.Tensor:
    """Patch-mode class ids (``1..C``) at the clicks of ``items``, in the order of ``predict_at_clicks``."""
    inferer = PatchCenterInferer(size, amp=amp)
    out = []
    with torch.no_grad():
        for item in items:
            coords = np.argwhere(item["label"] > 0)  # row-major, as boolean indexing orders the dense clicks
            out.append(inferer.predict_points(torch.as_tensor(item["image"]), net, coords).argmax(1) + 1)
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="DATASET,SEED,FOLDER (the ε-Seg folder)")
    parser.add_argument("--data_root", default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 192], help="patch sides to compare")
    parser.add_argument("--val_fraction", type=float, default=0.2, help="the bundle's --val_fraction")
    parser.add_argument("--amp", default="auto", help="precision of both predictions (the bundle's --val_amp)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = " | ".join(f"patch {s}²: Dice, agree (s)" for s in args.sizes)
    print(f"| run | trained on | clicks | dense: Dice (s) | {sizes} |")
    print("|" + "---|" * (4 + len(args.sizes)))
    for spec in args.run:
        dataset, seed, folder = spec.split(",", 2)
        net, config, stats = load_run(Path(folder))
        items, ds = held_out_items(dataset, int(seed), args.data_root, stats, args.val_fraction)
        start = time.perf_counter()
        inferer = DenseInferer(config["network"]["patch_size"], amp=args.amp)
        _, probs, labels = predict_at_clicks(net, items, inferer, ds.num_classes)
        dense_s = time.perf_counter() - start
        dense = probs.argmax(0) + 1
        cells = []
        for size in args.sizes:
            start = time.perf_counter()
            result = compare_to_dense(dense, patch_predictions(net, items, size, args.amp), labels, ds.num_classes)
            cells.append(f"{result['patch_dice']:.3f}, {result['agreement']:.3f} ({time.perf_counter() - start:.1f})")
        print(
            f"| {dataset} seed {seed} ({Path(folder).parent.parent.name}) | {config['network']['patch_size']}² | "
            f"{len(labels)} | {click_mean_dice(dense, labels, ds.num_classes):.3f} ({dense_s:.1f}) | "
            + " | ".join(cells)
            + " |",
            flush=True,
        )


if __name__ == "__main__":
    main()
