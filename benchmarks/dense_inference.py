"""Dense vs reference (one patch per pixel) prediction on real VNC sections: speed, agreement, accuracy, memory.

Both inferers run in one process on the same weights and the same randomly sampled pixels of each section:
``PatchCenterInferer`` (ε-Seg's reference mode) predicts only the sampled pixels; ``DenseInferer`` predicts
the whole section, and its probabilities are read at the sampled pixels. Printed per section and in total:
megapixels per second of each mode (output pixels over wall time), the speed ratio per output pixel, pixel
agreement of the two modes, Dice of each mode against the dense labels on the sampled pixels, and the dense
mode's Dice on every pixel of the section. ``--memory`` adds the peak memory (max RSS of a fresh process)
and wall time of dense prediction of a 4096x4096 image and a 256^3 volume with the same network size.

Usage (from the repository root; ``OMP_NUM_THREADS`` unset, ``--threads`` sets torch's threads)::

    python benchmarks/dense_inference.py --checkpoint runs/vnc_run/models/model.pt \\
        --stats runs/vnc_run/models/intensity_stats.json --filters 32 --blocks 2 --sections 12 13 14
    python benchmarks/dense_inference.py --filters 64 --blocks 5 --sections 12 --num_pixels 300 --memory
    python benchmarks/dense_inference.py --filters 64 --blocks 5 --fine_levels 0 1 --sections 12 --num_pixels 300

Without ``--checkpoint`` the network has seeded random weights: speeds are valid, accuracies are not.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from epsseg_monai.data.vnc import VNC_CLASS_NAMES, vnc_dense_to_classes
from epsseg_monai.inferers import DenseInferer, PatchCenterInferer
from epsseg_monai.metrics.sparse_dice import dice_counts, dice_from_counts
from epsseg_monai.networks import EpsSegHVAE
from epsseg_monai.utils import check_checkpoint

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def build_network(args: argparse.Namespace, spatial_dims: int = 2) -> EpsSegHVAE:
    torch.manual_seed(0)
    net = EpsSegHVAE(
        spatial_dims,
        1,
        len(VNC_CLASS_NAMES),
        num_levels=args.levels,
        num_filters=args.filters,
        num_blocks=args.blocks,
        latent_channels=args.latent,
        patch_size=args.patch,
        head_fine_levels=args.fine_levels,
    )
    if args.checkpoint and spatial_dims == 2:
        path = check_checkpoint(args.checkpoint, net)
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    return net.eval()


def load_section(root: Path, section: int, stats: dict | None) -> tuple[torch.Tensor, np.ndarray]:
    import tifffile
    from PIL import Image

    raw_path, label_path = root / "vnc" / "raw" / f"{section:02d}.tif", root / "vnc" / "labels" / f"{section:02d}.png"
    for path in (raw_path, label_path):
        if not path.exists():
            sys.exit(f"Missing {path}: pass --data_root pointing at the benchmark data (see ../shared/data/README).")
    raw = tifffile.imread(raw_path).astype(np.float32)
    mean, std = (stats["mean"][0], stats["std"][0]) if stats else (float(raw.mean()), float(raw.std()))
    image = torch.from_numpy((raw - mean) / std)[None]
    labels = vnc_dense_to_classes(np.asarray(Image.open(label_path)))
    return image, labels


def dice(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    counts = dice_counts(torch.as_tensor(pred), torch.as_tensor(truth), len(VNC_CLASS_NAMES))
    return dice_from_counts(counts).tolist()


def fmt(scores: list[float]) -> str:
    per_class = " ".join(f"{name} {s:.3f}" for name, s in zip(VNC_CLASS_NAMES, scores))
    return f"{per_class} | mean {np.nanmean(scores):.3f}"


def accuracy_run(args: argparse.Namespace) -> None:
    net = build_network(args)
    stats = json.loads(Path(args.stats).read_text()) if args.stats else None
    patch_inferer = PatchCenterInferer(args.patch, batch_size=args.batch_size)
    modes = {"dense": DenseInferer(args.patch), "dense_bf16": DenseInferer(args.patch, amp=True)}
    root = Path(args.data_root)
    rng = np.random.default_rng(args.seed)
    seconds = {"reference": 0.0, **{m: 0.0 for m in modes}}
    pixels = {"reference": 0, **{m: 0 for m in modes}}
    sampled: dict[str, list[np.ndarray]] = {k: [] for k in ("truth", "reference", *modes)}
    full: dict[str, list[np.ndarray]] = {k: [] for k in ("truth", *modes)}
    weights = args.checkpoint or "seeded random weights (accuracies meaningless)"
    print(
        f"network: {args.filters} filters, {args.blocks} blocks/level, {args.levels} levels, fine-detail head levels "
        f"{args.fine_levels or 'none'}; weights: {weights}"
    )
    radius = modes["dense"].receptive_field(net)
    print(f"torch threads: {torch.get_num_threads()}; receptive field radius {radius} px")
    for section in args.sections:
        image, labels = load_section(root, section, stats)
        flat = rng.choice(labels.size, size=args.num_pixels, replace=False)
        coords = np.stack(np.unravel_index(flat, labels.shape), axis=1)
        at = tuple(coords.T)
        with torch.no_grad():
            t = time.perf_counter()
            ref = patch_inferer.predict_points(image, net, coords).argmax(1).numpy() + 1
            seconds["reference"] += time.perf_counter() - t
        pixels["reference"] += len(coords)
        sampled["truth"].append(labels[at])
        sampled["reference"].append(ref)
        full["truth"].append(labels.ravel())
        line = f"section {section:02d}: reference {len(coords)} px {seconds['reference']:.1f} s (cumulative)"
        for mode, inferer in modes.items():
            t = time.perf_counter()
            label_map = inferer(image[None], net)[0].argmax(0).numpy() + 1
            dt = time.perf_counter() - t
            seconds[mode] += dt
            pixels[mode] += labels.size
            sampled[mode].append(label_map[at])
            full[mode].append(label_map.ravel())
            line += f"; {mode} {labels.size} px {dt:.1f} s, agreement {np.mean(label_map[at] == ref):.4f}"
        print(line)
    rate = {k: pixels[k] / seconds[k] for k in seconds}
    truth = np.concatenate(sampled["truth"])
    ref = np.concatenate(sampled["reference"])
    print("== total ==")
    print(f"reference mode: {rate['reference'] / 1e6:.6f} Mpx/s ({rate['reference']:.1f} px/s on {len(ref)} px)")
    for mode in modes:
        pred = np.concatenate(sampled[mode])
        print(
            f"{mode}: {rate[mode] / 1e6:.4f} Mpx/s; 1024x1024 section {2**20 / rate[mode]:.1f} s; "
            f"speed ratio per output pixel {rate[mode] / rate['reference']:.0f}x; "
            f"pixel agreement with the reference {np.mean(pred == ref):.4f}"
        )
    print(f"reference mode would take {2**20 / rate['reference'] / 3600:.1f} h per 1024x1024 section")
    print(f"Dice on the {len(truth)} sampled px, reference:  {fmt(dice(ref, truth))}")
    all_truth = np.concatenate(full["truth"])
    for mode in modes:
        print(f"Dice on the {len(truth)} sampled px, {mode}: {fmt(dice(np.concatenate(sampled[mode]), truth))}")
        print(f"Dice on every pixel, {mode}: {fmt(dice(np.concatenate(full[mode]), all_truth))}")


def memory_case(args: argparse.Namespace) -> None:
    """Child process: predict one random image of ``--case`` and print wall time and peak RSS as JSON."""
    dims, side = (2, args.image_side) if args.case == "2d" else (3, args.volume_side)
    net = build_network(args, dims)
    x = torch.randn((1, 1) + (side,) * dims)
    t = time.perf_counter()
    probs = DenseInferer(args.patch, progress=args.progress, amp=args.amp)(x, net)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB
    print(json.dumps({"case": args.case, "shape": list(probs.shape), "wall_s": wall, "peak_gib": peak}))


def memory_run(args: argparse.Namespace) -> None:
    cases = {"2d": f"{args.image_side}x{args.image_side} image", "3d": f"{args.volume_side}^3 volume"}
    for case in args.memory_cases:
        cmd = [sys.executable, __file__, "--case", case, "--threads", str(torch.get_num_threads())]
        cmd += ["--filters", str(args.filters), "--blocks", str(args.blocks), "--levels", str(args.levels)]
        cmd += ["--image_side", str(args.image_side), "--volume_side", str(args.volume_side)]
        cmd += ["--fine_levels", *map(str, args.fine_levels)] if args.fine_levels else []
        cmd += ["--amp"] if args.amp else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode:
            print(f"memory case {case} failed:\n{out.stderr[-2000:]}")
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"dense prediction of a {cases[case]} ({args.filters} filters, {args.blocks} blocks): "
            f"{'bfloat16' if args.amp else 'float32'}, {result['wall_s']:.1f} s, "
            f"peak memory {result['peak_gib']:.2f} GiB (max RSS of the process)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--sections", type=int, nargs="+", default=[12])
    parser.add_argument("--num_pixels", type=int, default=500, help="sampled pixels per section")
    parser.add_argument("--checkpoint", default=None, help="trained weights (bundle model.pt)")
    parser.add_argument("--stats", default=None, help="intensity_stats.json of the training run")
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument(
        "--fine_levels", type=int, nargs="*", default=[], help="head_fine_levels of the network (ε-Seg+: 0 1)"
    )
    parser.add_argument("--batch_size", type=int, default=128, help="patches per pass of the reference mode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory", action="store_true", help="also measure peak memory of large inputs")
    parser.add_argument("--memory_cases", nargs="+", default=["2d", "3d"], choices=["2d", "3d"])
    parser.add_argument("--skip_accuracy", action="store_true", help="only the --memory part")
    parser.add_argument("--image_side", type=int, default=4096)
    parser.add_argument("--volume_side", type=int, default=256)
    parser.add_argument("--case", choices=["2d", "3d"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--amp", action="store_true", help="bfloat16 in the --memory cases")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        memory_case(args)
        return
    if not args.skip_accuracy:
        accuracy_run(args)
    if args.memory:
        memory_run(args)


if __name__ == "__main__":
    main()
