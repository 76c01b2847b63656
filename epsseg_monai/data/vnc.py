"""Lay out the VNC ssTEM benchmark (``../shared/data/vnc``) in the bundle's folder convention.

The benchmark keeps raw sections, dense labels in the dataset's own grey codes and sparse point
annotations in separate folders. :func:`prepare_vnc` links the raw sections and sparse annotations
(no copy) and writes the dense labels converted to class ids 1..4::

    python -m epsseg_monai.data.vnc --src ../shared/data/vnc --dst runs/vnc --density sparse_0.05pct

gives ``runs/vnc/{images,labels}`` (sections 00-11), ``runs/vnc/val/{images,labels,ground_truth}``
(sections 12-14), ready for ``--dataset_dir runs/vnc``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["VNC_CLASS_NAMES", "VNC_CODES", "prepare_vnc", "vnc_dense_to_classes"]

#: Class ids of the benchmark and the dataset's grey codes mapped to them (see the data README).
VNC_CODES: dict[int, tuple[int, ...]] = {1: (255,), 2: (0, 32, 64, 96, 128, 223), 3: (191,), 4: (159,)}
VNC_CLASS_NAMES: tuple[str, ...] = ("intracellular", "membrane", "mitochondria", "glia")


def vnc_dense_to_classes(codes: np.ndarray) -> np.ndarray:
    """Map the dataset's dense grey codes to class ids 1..4; unknown codes raise a ``ValueError``."""
    out = np.zeros(codes.shape, dtype=np.uint8)
    for cls, values in VNC_CODES.items():
        out[np.isin(codes, values)] = cls
    if (out == 0).any():
        raise ValueError(f"unknown VNC label codes {sorted(set(np.unique(codes[out == 0]).tolist()))}.")
    return out


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src.resolve())


def prepare_vnc(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    density: str = "sparse_0.05pct",
    train: Sequence[int] = range(12),
    val: Sequence[int] = (12, 13, 14),
) -> Path:
    """Create the folder layout for training on ``train`` sections and validating on ``val`` sections.

    Args:
        src: the ``vnc`` benchmark folder (``raw/``, ``labels/``, ``sparse_*``).
        dst: output folder (created; only links and converted labels are written there).
        density: sparse annotation folder to use (``sparse_0.05pct`` or ``sparse_0.005pct``).
        train: training section numbers.
        val: validation section numbers (their dense labels go to ``val/ground_truth``).

    Returns:
        ``dst``.
    """
    import tifffile
    from PIL import Image

    src, dst = Path(src), Path(dst)
    for sub in ("raw", "labels", density):
        if not (src / sub).is_dir():
            raise FileNotFoundError(f"{src / sub} not found; --src must be the vnc benchmark folder.")
    for part, sections in (("", train), ("val", val)):
        root = dst / part
        for sub in ("images", "labels") + (("ground_truth",) if part else ()):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for s in sections:
            name = f"{s:02d}"
            _link(src / "raw" / f"{name}.tif", root / "images" / f"{name}.tif")
            _link(src / density / f"{name}.tif", root / "labels" / f"{name}.tif")
            if part:
                dense = vnc_dense_to_classes(np.asarray(Image.open(src / "labels" / f"{name}.png")))
                tifffile.imwrite(root / "ground_truth" / f"{name}.tif", dense)
    return dst


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default="../shared/data/vnc", help="the vnc benchmark folder")
    parser.add_argument("--dst", default="runs/vnc", help="output dataset folder")
    parser.add_argument("--density", default="sparse_0.05pct", help="sparse_0.05pct or sparse_0.005pct")
    args = parser.parse_args(argv)
    print(prepare_vnc(args.src, args.dst, args.density))


if __name__ == "__main__":
    main()
