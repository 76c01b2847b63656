"""A trained bundle exported as a bioimage.io package, predicted through ``bioimageio.core``: time and agreement.

Exports ``--bundle_root`` with ``python -m epsseg_monai.export bioimageio`` (the image as the package's test input),
then, side by side in this process: ``bioimageio.core.predict`` on the raw image (the package's own preprocessing,
weights ``--weight_format``; whole image, and in blocks with the declared halo when ``--blocksize`` is given) and
:class:`~epsseg_monai.inferers.DenseInferer` (float32) on the same image. Prints seconds of each (model loading
apart), the fraction of pixels with the same class, and the fraction more than one halo from the image border
that agree to 1e-4 in probability.

Usage::

    python benchmarks/bioimageio_predict.py --bundle_root runs/acc/.../epsseg --image ../shared/data/vnc/raw/12.tif
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from epsseg_monai.export import export_bioimageio, load_trained_network  # noqa: E402
from epsseg_monai.inferers import DenseInferer  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle_root", required=True)
    parser.add_argument("--image", required=True, help="a 2D TIFF of raw intensities")
    parser.add_argument("--weight_format", default="torchscript", choices=["torchscript", "pytorch_state_dict"])
    parser.add_argument("--blocksize", type=int, default=None, help="also predict in blocks (bioimage.io parameter n)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import tifffile
    from bioimageio.core import create_prediction_pipeline, load_description, predict

    raw = tifffile.imread(args.image).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "image.npy", raw)
        t = time.perf_counter()
        package = export_bioimageio(args.bundle_root, Path(tmp) / "model.zip", sample_image=Path(tmp) / "image.npy")
        export_s = time.perf_counter() - t
        descr = load_description(package)
        halo = descr.outputs[0].axes[2].halo
        t = time.perf_counter()
        pipeline = create_prediction_pipeline(descr, weight_format=args.weight_format)
        load_s = time.perf_counter() - t
        x = raw[None, None]
        timings, outputs = {}, {}
        for name, block in [("whole", None)] + ([("blocks", args.blocksize)] if args.blocksize is not None else []):
            t = time.perf_counter()
            sample = predict(model=pipeline, inputs={"image": x}, blocksize_parameter=block)
            timings[name] = time.perf_counter() - t
            outputs[name] = np.asarray(sample.members["probabilities"].data)
    net, config = load_trained_network(args.bundle_root)
    stats = config["intensity_stats"]
    xn = torch.from_numpy((raw - stats["mean"][0]) / stats["std"][0]).float()[None, None]
    t = time.perf_counter()
    expected = DenseInferer(amp=False)(xn, net).numpy()
    dense_s = time.perf_counter() - t
    print(f"image {args.image} {raw.shape}, halo {halo} px, {args.threads} threads, export {export_s:.1f} s, "
          f"pipeline load {load_s:.1f} s ({args.weight_format})")  # fmt: skip
    print(f"DenseInferer (float32): {dense_s:.1f} s")
    inner = (slice(None), slice(None), slice(halo, -halo), slice(halo, -halo))
    for name, probs in outputs.items():
        agree = float((probs.argmax(1) == expected.argmax(1)).mean())
        close = float((np.abs(probs[inner] - expected[inner]).max(1) <= 1e-4).mean())
        print(f"bioimageio.core {name}: {timings[name]:.1f} s, same class on {agree:.4%} of pixels, "
              f"probabilities within 1e-4 on {close:.4%} of the pixels >= halo from the border")  # fmt: skip


if __name__ == "__main__":
    main()
