"""The interactive loop, simulated: do suggested clicks (``SuggestClicks``) beat random ones?

A simulated user starts from the sparse clicks of ``--start_density`` (VNC 0.005 % by default), trains ε-Seg
(the bundle, ``--preset``, ``--budget0`` seconds), then runs ``--rounds`` rounds: ``--clicks`` new positions
(default: as many as the starting clicks) are proposed, the user labels each with its ground-truth class, and
the model is fine-tuned from the previous round's weights (``--load_pretrain true``, ``--round_budget``
seconds) on all clicks so far. Strategies, each from the same round-0 model:

* ``suggested``: :class:`~epsseg_monai.transforms.SuggestClicks` on the dense class probabilities of each
  training image (uncertain, spread out, round-robin over the predicted classes; the clicks are shared equally
  between the images);
* ``random``: positions drawn uniformly among the unlabelled pixels of the training images;
* ``balanced``: as many random positions of each true class (what a user who clicks every class alike does).

After each round the mean Dice on every pixel of the test images is recorded (the same protocol and splits as
``benchmarks/accuracy.py``). Prints a table per seed, the mean over seeds, writes ``results.json`` and a plot
``click_loop_<dataset>.png`` to ``--output_dir``.

Usage (from the repository root)::

    python benchmarks/click_loop.py [--data_root ../shared/data] [--dataset vnc] \\
        [--start_density sparse_0.005pct] [--rounds 3] [--clicks N] [--budget0 600] [--round_budget 300] \\
        [--strategies suggested random balanced] [--seeds 0 1] [--preset plus] [--output_dir runs/click_loop]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(REPO))

from benchmarks.accuracy import bundle_network, preset_path, preset_values, run_epsseg  # noqa: E402
from benchmarks.baselines.data import BenchmarkDataset, dice_scores, load_dataset  # noqa: E402
from epsseg_monai.inferers import DenseInferer  # noqa: E402
from epsseg_monai.transforms import SuggestClicks  # noqa: E402

STRATEGIES = ("suggested", "random", "balanced")


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` items over ``parts`` as evenly as possible (the first ones get the remainder)."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def random_clicks(labels: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``n`` positions ``(image, y, x)`` drawn uniformly among the unlabelled pixels of ``labels`` ``(N, H, W)``."""
    free = np.flatnonzero(labels.reshape(-1) == 0)
    picks = rng.choice(free, size=min(n, free.size), replace=False)
    return [tuple(int(v) for v in np.unravel_index(p, labels.shape)) for p in picks]


def balanced_clicks(
    labels: np.ndarray, dense: np.ndarray, n: int, num_classes: int, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """``n`` unlabelled positions, as many of each true class (from ``dense``) as possible."""
    out: list[tuple[int, ...]] = []
    for c, k in zip(range(1, num_classes + 1), split_evenly(n, num_classes)):
        free = np.flatnonzero((labels.reshape(-1) == 0) & (dense.reshape(-1) == c))
        picks = rng.choice(free, size=min(k, free.size), replace=False)
        out += [tuple(int(v) for v in np.unravel_index(p, labels.shape)) for p in picks]
    return out


def suggested_clicks(
    net: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    stats: dict,
    n: int,
    patch_size: int,
) -> list[tuple[int, ...]]:
    """``n`` positions proposed by :class:`SuggestClicks` on each training image's dense probabilities."""
    inferer = DenseInferer(patch_size)
    out: list[tuple[int, ...]] = []
    for i, (image, lab, k) in enumerate(zip(images, labels, split_evenly(n, len(images)))):
        x = torch.from_numpy((image - stats["mean"][0]) / stats["std"][0]).float()[None, None]
        with torch.no_grad():
            probs = inferer(x, net)[0].numpy()
        rows = SuggestClicks(k, min_distance=max(1, patch_size // 4))(probs, lab)
        out += [(i, int(r[0]), int(r[1])) for r in rows]
    return out


def label_clicks(labels: np.ndarray, dense: np.ndarray, clicks: list[tuple[int, ...]]) -> np.ndarray:
    """The simulated user: each click gets its ground-truth class."""
    new = labels.copy()
    for pos in clicks:
        new[pos] = dense[pos]
    return new


def score(ds: BenchmarkDataset, preds: list[np.ndarray]) -> tuple[list[float], float]:
    return dice_scores(preds, ds.test_dense, ds.num_classes)


def load_model(preset: Path, num_classes: int, model_dir: Path) -> torch.nn.Module:
    net = bundle_network(preset, num_classes)
    path = model_dir / "model.pt" if (model_dir / "model.pt").exists() else model_dir / "model_last.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state["model"] if "model" in state else state)
    return net.eval()


def run_seed(ds: BenchmarkDataset, args: argparse.Namespace, seed: int, folder: Path) -> dict:
    """Round 0 and every strategy's rounds for one seed; ``{strategy: [{"round", "clicks", "dice", ...}]}``."""
    preset = preset_path(args.preset)
    patch = preset_values(preset).get("patch_size", 64)
    # calibrate=False: the rounds are scored without the class-share calibration, as they were measured
    run_args = argparse.Namespace(
        preset=args.preset, budget=args.budget0, epsseg_budget=None, threads=args.threads, seed=seed,
        semi_supervised_epochs=0, overlays=[], tta=False, reuse_epsseg=False, calibrate=False,
    )  # fmt: skip
    start = ds.train_sparse
    n_new = args.clicks or int((start > 0).sum())
    work0 = folder / "round0"
    preds, train_s, _ = run_epsseg(ds, run_args, work0)
    per_class, mean = score(ds, preds["epsseg"])
    first = {"round": 0, "clicks": int((start > 0).sum()), "dice": mean, "per_class": per_class, "train_s": train_s}
    print(f"seed {seed} round 0: {first['clicks']} clicks, test mean Dice {mean:.3f}")
    results: dict[str, list[dict]] = {}
    for strategy in args.strategies:
        rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
        labels, prev, rows = start.copy(), work0 / "models", [first]
        for r in range(1, args.rounds + 1):
            t = time.perf_counter()
            if strategy == "suggested":
                net = load_model(preset, ds.num_classes, prev)
                stats = json.loads((prev / "intensity_stats.json").read_text())
                clicks = suggested_clicks(net, ds.train_images, labels, stats, n_new, patch)
            elif strategy == "random":
                clicks = random_clicks(labels, n_new, rng)
            else:
                clicks = balanced_clicks(labels, ds.train_dense, n_new, ds.num_classes, rng)
            propose_s = time.perf_counter() - t
            labels = label_clicks(labels, ds.train_dense, clicks)
            work = folder / f"{strategy}_round{r}"
            round_ds = dataclasses.replace(ds, train_sparse=labels)
            round_args = argparse.Namespace(**{**vars(run_args), "budget": args.round_budget})
            extra = ["--load_pretrain", "true", "--pretrained_checkpoint", str(prev / "model.pt")]
            preds, train_s, _ = run_epsseg(round_ds, round_args, work, extra)
            per_class, mean = score(ds, preds["epsseg"])
            added = np.bincount(np.asarray([ds.train_dense[c] for c in clicks], dtype=np.int64),
                                minlength=ds.num_classes + 1)[1:].tolist()  # fmt: skip
            rows.append({
                "round": r, "clicks": int((labels > 0).sum()), "added_per_class": added, "dice": mean,
                "per_class": per_class, "train_s": train_s, "propose_s": propose_s,
            })  # fmt: skip
            print(f"seed {seed} {strategy} round {r}: {rows[-1]['clicks']} clicks (+{added} per class), "
                  f"test mean Dice {mean:.3f}")  # fmt: skip
            prev = work / "models"
        results[strategy] = rows
    return results


def plot(summary: dict[str, list[list[float]]], clicks: dict[str, list[int]], title: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for strategy, per_seed in summary.items():
        values = np.asarray(per_seed)  # seeds x rounds
        mean, spread = values.mean(0), values.std(0)
        ax.errorbar(clicks[strategy], mean, yerr=spread, marker="o", capsize=3, label=strategy)
    ax.set_xlabel("clicks")
    ax.set_ylabel("test mean Dice")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--dataset", default="vnc", choices=["vnc", "nih3t3"])
    parser.add_argument("--start_density", default="sparse_0.005pct")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clicks", type=int, default=None, help="clicks added per round (default: the start count)")
    parser.add_argument("--budget0", type=float, default=600, help="seconds of the round-0 training")
    parser.add_argument("--round_budget", type=float, default=300, help="seconds of each round's fine-tuning")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--preset", default="plus")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output_dir", default="runs/click_loop")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        ds = load_dataset(args.dataset, args.data_root, args.start_density)
    except FileNotFoundError as e:
        print(f"skipped: {e}")
        return {}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"date {time.strftime('%Y-%m-%d %H:%M')}, {args.threads} threads, {args.dataset} {args.start_density}")
    all_results = {seed: run_seed(ds, args, seed, out / f"seed{seed}") for seed in args.seeds}
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": all_results}, indent=2))
    summary = {s: [[row["dice"] for row in all_results[seed][s]] for seed in args.seeds] for s in args.strategies}
    clicks = {s: [row["clicks"] for row in all_results[args.seeds[0]][s]] for s in args.strategies}
    print("\n| strategy | " + " | ".join(f"round {r}" for r in range(args.rounds + 1)) + " |")
    print("|---" * (args.rounds + 2) + "|")
    for strategy, per_seed in summary.items():
        values = np.asarray(per_seed)
        cells = [f"{m:.3f} ± {s:.3f} ({c})" for m, s, c in zip(values.mean(0), values.std(0), clicks[strategy])]
        print(f"| {strategy} | " + " | ".join(cells) + " |")
    first = clicks[args.strategies[0]]
    title = f"{args.dataset} {args.start_density}: +{first[1] - first[0]} clicks per round"
    if plot(summary, clicks, title, out / f"click_loop_{args.dataset}.png"):
        print(f"plot: {out / f'click_loop_{args.dataset}.png'}")
    return all_results


if __name__ == "__main__":
    main()
