"""Peak memory of out-of-core prediction through the bundle: an 8192² image, OME-Zarr in and out.

Builds an ``--side``² image (a mosaic of the VNC sections, so the content is real EM), writes it as an OME-Zarr
(``epsseg_monai.data.large_image.create_output``), then runs, in a child process::

    python -m monai.bundle run inference \\
        --config_file "['bundle/configs/inference.json','bundle/configs/large_image_inference.json']" \\
        --model_dir MODEL_DIR --input_dir IN --output_dir OUT --output_format ome.zarr --tile_size 1024

and reports its wall time and peak resident memory (``ru_maxrss`` of the child), the size of the image in float32
for comparison, and checks one 1024² window of the output against ``DenseInferer`` on that window with its
receptive-field margin (the same pixels, predicted in memory).

Usage::

    python benchmarks/large_image_rss.py --model_dir runs/acc/.../epsseg/models [--side 8192] [--tile_size 1024] \\
        [--data_root ../shared/data] [--threads 2] [--work_dir runs/large_image]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def mosaic(data_root: Path, side: int) -> np.ndarray:
    import tifffile

    sections = [tifffile.imread(p) for p in sorted((data_root / "vnc" / "raw").glob("*.tif"))]
    if not sections:
        raise FileNotFoundError(f"No VNC sections in {data_root / 'vnc' / 'raw'}; pass --data_root.")
    h, w = sections[0].shape
    out = np.empty((side, side), np.uint8)
    k = 0
    for y in range(0, side, h):
        for x in range(0, side, w):
            tile = sections[k % len(sections)]
            k += 1
            out[y : y + h, x : x + w] = tile[: side - y, : side - x]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="a trained bundle's models/ (model.pt, network.json, ...)")
    parser.add_argument("--data_root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--side", type=int, default=8192)
    parser.add_argument("--tile_size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work_dir", default="runs/large_image")
    args = parser.parse_args(argv)

    from epsseg_monai.data.large_image import create_output

    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    (work / "in").mkdir(parents=True)
    image = mosaic(Path(args.data_root), args.side)
    out = create_output(work / "in" / "mosaic.ome.zarr", image.shape, np.uint8, "yx")
    out[...] = image
    del out
    configs = [str(REPO / "bundle" / "configs" / c) for c in ("inference.json", "large_image_inference.json")]
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", json.dumps(configs),
        "--bundle_root", str(REPO / "bundle"), "--model_dir", args.model_dir,
        "--checkpoint", str(Path(args.model_dir) / "model.pt"), "--input_dir", str(work / "in"),
        "--output_dir", str(work / "out"), "--output_format", "ome.zarr", "--tile_size", str(args.tile_size),
        "--num_threads", str(args.threads),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if result.returncode:
        print(result.stderr[-4000:])
        raise SystemExit(result.returncode)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux

    # one window of the output against the in-memory prediction of that window (with its receptive field)
    import torch
    import zarr

    from epsseg_monai.export import load_trained_network
    from epsseg_monai.inferers import DenseInferer

    torch.set_num_threads(args.threads)
    net, info = load_trained_network(Path(args.model_dir).parent, Path(args.model_dir) / "model.pt")
    inferer = DenseInferer(amp="auto")
    margin = inferer.receptive_field(net)
    y0 = x0 = args.side // 2
    win = image[y0 - margin : y0 + 1024 + margin, x0 - margin : x0 + 1024 + margin].astype(np.float32)
    stats = info["intensity_stats"]
    x = torch.from_numpy((win - stats["mean"][0]) / stats["std"][0])[None, None]
    with torch.no_grad():
        ref = inferer(x, net)[0].argmax(0).numpy()[margin:-margin, margin:-margin] + 1
    got = zarr.open_group(str(work / "out" / "mosaic.ome.zarr"), mode="r")["0"][y0 : y0 + 1024, x0 : x0 + 1024]
    agreement = float((np.asarray(got) == ref).mean())
    row = {
        "side": args.side,
        "tile_size": args.tile_size,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_mib),
        "image_float32_mib": round(args.side**2 * 4 / 2**20),
        "window_agreement": agreement,
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
