"""Data-parallel training throughput: ``torchrun`` with N processes (``multi_gpu_train.json``) against one process,
at the same global batch, through ``python -m monai.bundle run training``.

On a CPU machine it compares N processes x T threads (gloo) with 1 process x N*T threads; on a GPU machine, N
GPUs (nccl) with one. Each run trains ``--epochs`` x ``--epoch_length`` iterations without validation on the
embedded synthetic data (or ``--dataset_dir``) and the time is the trainer's own ("Engine run finished. Time
taken"), so process start-up and dataset caching are left out. Prints patches per second of each and their ratio.

Usage::

    python benchmarks/ddp_throughput.py [--nproc 2 --threads 1 --preset cpu --batch_size 32 --epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"


def trainer_seconds(log: str) -> float:
    """The SupervisedTrainer's run time from ignite's log line (the last one: phase 1 only here)."""
    times = re.findall(r"SupervisedTrainer - INFO - Engine run finished. Time taken: (\d+):(\d+):([\d.]+)", log)
    if not times:
        raise RuntimeError(f"no trainer run time in the log:\n{log[-3000:]}")
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def run(nproc: int, threads: int, args: argparse.Namespace, work: Path) -> float:
    configs = [str(CONFIGS / "train.json")]
    if nproc > 1:
        configs.append(str(CONFIGS / "multi_gpu_train.json"))
    if args.preset:
        configs.append(str(CONFIGS / "presets" / f"{args.preset}.json"))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"]
    cmd = [*(launcher if nproc > 1 else [sys.executable, "-m"]), "monai.bundle", "run", "training"]
    cmd += ["--config_file", json.dumps(configs), "--bundle_root", str(work), "--num_threads", str(threads)]
    cmd += ["--batch_size", str(args.batch_size // nproc), "--epochs", str(args.epochs)]
    cmd += ["--epoch_length", str(args.epoch_length), "--val_interval", str(args.epochs + 1), "--time_limit", "0"]
    cmd += ["--early_stop_patience", "1000"]
    if args.dataset_dir:
        cmd += ["--dataset_dir", args.dataset_dir, "--num_classes", str(args.num_classes)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    print(f"  {nproc} process(es) x {threads} thread(s): wall {time.perf_counter() - t:.0f} s")
    return trainer_seconds(proc.stdout + proc.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per process of the data-parallel run")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch_size", type=int, default=32, help="global batch (patches per step over all ranks)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epoch_length", type=int, default=20)
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--num_classes", type=int, default=4)
    args = parser.parse_args()
    patches = args.epochs * args.epoch_length * args.batch_size
    print(f"date {time.strftime('%Y-%m-%d %H:%M')}, preset {args.preset}, global batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        single = run(1, args.nproc * args.threads, args, Path(tmp) / "one")
        if not args.dataset_dir:  # the data the single run generated (no two ranks generating at once)
            args.dataset_dir = str(Path(tmp) / "one" / "data" / "synthetic_em")
        multi = run(args.nproc, args.threads, args, Path(tmp) / "ddp")
    print(f"1 process x {args.nproc * args.threads} threads: {single:.1f} s, {patches / single:.1f} patches/s")
    print(f"{args.nproc} processes x {args.threads} thread(s): {multi:.1f} s, {patches / multi:.1f} patches/s")
    print(f"data-parallel speed-up: {single / multi:.2f}x")


if __name__ == "__main__":
    main()
