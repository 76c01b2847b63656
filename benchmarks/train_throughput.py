"""Training throughput of the bundle's trainer: steps, patches and labelled pixels learned per second.

Builds ``bundle/configs/train.json`` with each given preset (a name in ``bundle/configs/presets/`` or a JSON file)
on a dataset folder (``images/`` + ``labels/``, e.g. one written by ``benchmarks/accuracy.py``) in this process,
runs ``--warmup`` + ``--steps`` iterations of its ``SupervisedTrainer`` (no validation) and prints, per preset, the
median seconds per step with the data pipeline (drawing and augmenting the patches, ``GET_BATCH_STARTED`` to
``ITERATION_COMPLETED``, what a training run pays) and without it (forward, loss, backward and optimiser step:
``ITERATION_STARTED`` to ``ITERATION_COMPLETED``), patches per second (the
masked patches of the inpainting/KL/contrastive terms) and labelled pixels learned per second: the patch
centres of the patch cross-entropy (when ``ce_weight > 0``) plus the labelled pixels of the dense cross-entropy on
unmasked crops (ε-Seg+, ``dense_ce_weight > 0``). Presets are timed in turns (``--rounds``), so that a change of
machine load affects all of them alike.

Usage::

    python benchmarks/train_throughput.py --dataset_dir runs/data/vnc_sparse_0.05pct --num_classes 4 \\
        --presets cpu plus [--steps 10 --warmup 3 --rounds 2 --threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.accuracy import preset_path  # noqa: E402


def build(preset: str, args: argparse.Namespace) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundle" / "configs" / "train.json"), str(preset_path(preset))])
    parser.update(
        {
            "bundle_root": str(REPO / "bundle"),
            "dataset_dir": args.dataset_dir,
            "model_dir": str(Path(args.work_dir) / "models"),
            "output_dir": str(Path(args.work_dir) / "eval"),
            "num_classes": args.num_classes,
            "class_names": [f"class{i + 1}" for i in range(args.num_classes)],
        }
    )
    return parser


def time_preset(preset: str, args: argparse.Namespace) -> dict[str, float]:
    parser = build(preset, args)
    parser.get_parsed_content("initialize")  # seed, threads, intensity statistics
    trainer = parser.get_parsed_content("train#trainer")
    loss = parser.get_parsed_content("loss")
    ce = float(parser.get_parsed_content("ce_weight")) > 0
    batch = int(parser.get_parsed_content("batch_size"))
    times: list[float] = []
    with_data: list[float] = []
    pixels: list[float] = []
    state = {"t": 0.0, "fetch": 0.0}

    def fetching(engine) -> None:
        state["fetch"] = time.perf_counter()

    def started(engine) -> None:
        state["t"] = time.perf_counter()

    def completed(engine) -> None:
        now = time.perf_counter()
        times.append(now - state["t"])
        with_data.append(now - state["fetch"])
        terms = getattr(loss, "terms", {})
        pixels.append(float(terms.get("dense_pixels", 0.0)) + (batch if ce else 0))
        if len(times) >= args.warmup + args.steps:
            engine.terminate()

    trainer.add_event_handler(Events.GET_BATCH_STARTED, fetching)
    trainer.add_event_handler(Events.ITERATION_STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    trainer._event_handlers[Events.EPOCH_COMPLETED] = []  # no validation, checkpoints or stats: not timed
    torch.set_num_threads(args.threads)  # after "initialize", which applies the preset's num_threads
    trainer.run()
    step = statistics.median(times[args.warmup :])
    full = statistics.median(with_data[args.warmup :])
    px = statistics.median(pixels[args.warmup :])
    return {
        "s_per_step": full,
        "s_per_step_without_data": step,
        "patches_per_s": batch / full,
        "labelled_pixels_per_s": px / full,
        "pixels": px,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--num_classes", type=int, required=True)
    parser.add_argument("--presets", nargs="+", default=["cpu"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work_dir", default="runs/train_throughput")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[dict[str, float]]] = {p: [] for p in args.presets}
    for _ in range(args.rounds):
        for preset in args.presets:
            results[preset].append(time_preset(preset, args))
    print(f"date {time.strftime('%Y-%m-%d %H:%M')}, {torch.get_num_threads()} threads, {args.dataset_dir}")
    print("| preset | s / step | s / step without the data pipeline | patches / s | labelled pixels / step | "
          "labelled pixels / s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    summary = {}
    for preset, rows in results.items():
        best = min(rows, key=lambda r: r["s_per_step"])  # the least disturbed round
        summary[preset] = best
        print(
            f"| {preset} | {best['s_per_step']:.3f} | {best['s_per_step_without_data']:.3f} | "
            f"{best['patches_per_s']:.1f} | {best['pixels']:.0f} | "
            f"{best['labelled_pixels_per_s']:.1f} |"
        )
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.work_dir) / "results.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
