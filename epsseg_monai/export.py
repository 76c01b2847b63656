"""Export a trained bundle's dense predictor (every pixel's class logits) to TorchScript.

The exported module is :class:`~epsseg_monai.networks.DensePredictor` (the network's dense pass in à-trous form,
traced once, valid for every image size), so tools outside this package run the whole-image prediction, not a
centre-pixel classifier::

    python -m epsseg_monai.export torchscript --bundle_root bundle --output bundle/models/model_dense.ts
    python -m epsseg_monai.export bioimageio --bundle_root bundle --output epsseg_model.zip

``torch.jit.load(path)(x)`` maps ``(B, in_channels, *spatial)`` images, normalised with the training statistics,
to ``(B, num_classes, *spatial)`` logits (class ``k`` is label id ``k + 1``; 0 is "unlabelled"). With ``--valid``
the module is the valid pass instead (no border padding, smaller by the padding; the form
:class:`~epsseg_monai.inferers.DenseSlidingWindowInferer` tiles). The file carries ``metadata.json`` as a
TorchScript extra file (``torch.jit.load(path, _extra_files={"metadata.json": ""})``): padding, receptive field
(the halo a tiler needs), class names, intensity statistics, spatial dims and channels.

``bioimageio`` writes a bioimage.io model package (spec 0.5; :func:`export_bioimageio`) that Fiji/deepImageJ,
ilastik, QuPath, napari and ``bioimageio.core`` run: the same predictor with a softmax (class probabilities),
TorchScript and state-dict weights, the training intensity statistics as its preprocessing, the receptive field
as the output halo (for tiled prediction), test tensors, a cover image, class names, the ε-Seg citation and a
licence. It needs the optional extra ``pip install "epsseg-monai[bioimageio]"`` (``bioimageio.core``).

The export reads ``models/network.json`` (the network's sizes) and ``models/intensity_stats.json`` written by
training, checks the weights, traces, and checks the traced module against the dense pass on a second image
size before writing; an existing output is kept unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ProbabilityPredictor",
    "SampleImageTooSmallError",
    "bioimageio_predictor",
    "export_bioimageio",
    "export_onnx",
    "export_torchscript",
    "load_torchscript",
    "load_trained_network",
    "main",
]


def load_trained_network(
    bundle_root: str | os.PathLike, checkpoint: str | os.PathLike | None = None
) -> tuple[Any, dict]:
    """The trained :class:`~epsseg_monai.networks.EpsSegHVAE` of a bundle (eval mode) and its description.

    Args:
        bundle_root: the bundle folder (holding ``models/``).
        checkpoint: the weights (default ``models/model.pt``); its folder must hold ``network.json``.

    Returns:
        ``(network, {"network": ..., "class_names": ..., "intensity_stats": ...})``.
    """
    from epsseg_monai.data import load_intensity_stats
    from epsseg_monai.networks import EpsSegHVAE, load_network_config
    from epsseg_monai.utils import check_network_state, load_checkpoint

    root = Path(bundle_root)
    ckpt = Path(checkpoint) if checkpoint is not None else root / "models" / "model.pt"
    config = load_network_config(ckpt.parent / "network.json")
    net = EpsSegHVAE(**config["network"])
    net.load_state_dict(check_network_state(load_checkpoint(ckpt), net, ckpt))
    stats = load_intensity_stats(ckpt.parent / "intensity_stats.json")
    return net.eval(), {**config, "intensity_stats": stats}


def export_torchscript(
    bundle_root: str | os.PathLike,
    output: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    valid: bool = False,
    overwrite: bool = False,
) -> Path:
    """Trace the bundle's dense predictor and write it with its metadata (see the module docstring).

    Raises:
        FileExistsError: when ``output`` exists and ``overwrite`` is false.
        RuntimeError: when the traced module disagrees with the dense pass on an image of another size.
    """
    job = _ExportJob(bundle_root, output, checkpoint, valid, overwrite)
    with torch.no_grad():
        traced = torch.jit.trace(job.predictor, job.example, check_trace=False)
        job.verify(traced(job.check), "traced")
    out, metadata = job.out, job.metadata
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.jit.save(traced, os.fspath(tmp), _extra_files={"metadata.json": json.dumps(metadata, indent=2)})
    os.replace(tmp, out)
    return out


def export_onnx(
    bundle_root: str | os.PathLike,
    output: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    valid: bool = False,
    overwrite: bool = False,
    opset: int = 17,
) -> Path:
    """Write the bundle's dense predictor as ONNX (``image`` -> ``logits``, batch and spatial sizes dynamic).

    The same module as :func:`export_torchscript`, exported through ``torch.onnx.export`` and checked with
    ``onnxruntime`` against the dense pass on an image of another size before it is written; the metadata of the
    TorchScript file is the model's ``metadata_props["epsseg_monai"]`` (JSON). Needs the optional extra
    ``pip install "epsseg-monai[onnx]"`` (onnx, onnxruntime).

    Raises:
        ImportError: without onnx / onnxruntime.
        FileExistsError: when ``output`` exists and ``overwrite`` is false.
        RuntimeError: when onnxruntime's result disagrees with the dense pass.
    """
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ImportError('ONNX export needs onnx and onnxruntime: pip install "epsseg-monai[onnx]".') from e
    job = _ExportJob(bundle_root, output, checkpoint, valid, overwrite)
    out, dims = job.out, job.predictor.spatial_dims
    axes = {0: "batch", **{2 + d: "zyx"[3 - dims + d] for d in range(dims)}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad():
        torch.onnx.export(
            job.predictor, (job.example,), os.fspath(tmp), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes}, opset_version=opset, dynamo=False,
        )  # fmt: skip
    model = onnx.load(os.fspath(tmp))
    entry = model.metadata_props.add()
    entry.key, entry.value = "epsseg_monai", json.dumps(job.metadata)
    onnx.checker.check_model(model)
    onnx.save(model, os.fspath(tmp))
    session = onnxruntime.InferenceSession(os.fspath(tmp), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": job.check.numpy()})
    try:
        job.verify(torch.from_numpy(got), "ONNX")
    except RuntimeError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return out


class _ExportJob:
    """What every export of the dense predictor shares: the overwrite check, the trained network and its
    predictor, a tracing example, and a check image of another size with the dense pass's logits on it."""

    def __init__(
        self,
        bundle_root: str | os.PathLike,
        output: str | os.PathLike,
        checkpoint: str | os.PathLike | None,
        valid: bool,
        overwrite: bool,
    ) -> None:
        self.out = Path(output)
        if self.out.exists() and not overwrite:
            raise FileExistsError(
                f"{self.out} exists; pass --overwrite true to replace it, or choose another --output."
            )
        net, config = load_trained_network(bundle_root, checkpoint)
        pad_mode = None if valid else "reflect"
        self.predictor = net.dense_predictor(pad_mode=pad_mode)
        dims, channels = self.predictor.spatial_dims, self.predictor.in_channels
        side = max(b + a for b, a in self.predictor.pads) + 8
        gen = torch.Generator().manual_seed(0)
        self.example = torch.randn((1, channels, *(side,) * dims), generator=gen)
        self.check = torch.randn((1, channels, *(side + 3 + d for d in range(dims))), generator=gen)
        with torch.no_grad():
            self.expected = net.forward_dense(self.check, pad_mode=pad_mode)
        self.metadata = _metadata(self.predictor, config, valid)

    def verify(self, got: torch.Tensor, what: str) -> None:
        """Raise ``RuntimeError`` unless ``got`` (the exported module on ``check``) equals the dense pass."""
        if got.shape != self.expected.shape or not torch.allclose(got, self.expected, atol=1e-3, rtol=1e-3):
            raise RuntimeError(
                f"The {what} predictor disagrees with the dense pass on a {tuple(self.check.shape[2:])} image; "
                "please report it."
            )


def _metadata(predictor: Any, config: dict[str, Any], valid: bool) -> dict[str, Any]:
    """What a tool needs next to the exported predictor: padding, halo, classes, statistics, network sizes."""
    return {
        "format": "epsseg_monai dense predictor",
        "output": "logits (B, num_classes, *spatial); class k is label id k + 1",
        "pad_mode": None if valid else "reflect",
        "pads": [list(p) for p in predictor.pads],
        "receptive_field": predictor.receptive_field,
        "spatial_dims": predictor.spatial_dims,
        "in_channels": predictor.in_channels,
        "num_classes": predictor.num_classes,
        "class_names": list(config["class_names"]),
        "intensity_stats": config["intensity_stats"],
        "network": config["network"],
    }


def load_torchscript(
    path: str | os.PathLike, device: str | torch.device | None = None
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """A dense predictor written by :func:`export_torchscript` and its ``metadata.json`` (``inference_ts.json``).

    Raises:
        FileNotFoundError: when ``path`` does not exist (the message gives the export command).
        ValueError: when ``path`` is not TorchScript, or a TorchScript file without this package's metadata.
    """
    path = Path(path)
    export = f"python -m epsseg_monai.export torchscript --bundle_root BUNDLE --output {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; export the trained bundle's dense predictor first: {export}")
    extra = {"metadata.json": ""}
    try:
        module = torch.jit.load(os.fspath(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a TorchScript file ({first}); export it again: {export}") from e
    if not extra["metadata.json"]:
        raise ValueError(f"{path} has no epsseg_monai metadata.json (not written by {export.split(' --')[0]}).")
    metadata = json.loads(extra["metadata.json"])
    return module.eval(), metadata


class SampleImageTooSmallError(ValueError):
    """The bioimage.io test input is smaller than the package's minimal size (twice the receptive field, plus 2)."""


CITATION = {
    "text": "Rahnamai Kordasiabi, Dalle Nogare, Jug. ε-Seg: Sparsely Supervised Semantic Segmentation of Microscopy "
    "Data. arXiv:2510.18637, 2025",
    "doi": "10.48550/arXiv.2510.18637",
}


class ProbabilityPredictor(torch.nn.Module):
    """A dense predictor followed by a softmax over the classes: per-pixel class probabilities."""

    def __init__(self, predictor: torch.nn.Module) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.predictor(x), dim=1)


def bioimageio_predictor(network_args: dict[str, Any]) -> torch.nn.Module:
    """The architecture of the bioimage.io package's state-dict weights: :class:`ProbabilityPredictor` around the
    :class:`~epsseg_monai.networks.DensePredictor` of an ``EpsSegHVAE(**network_args)`` (weights to be loaded)."""
    from epsseg_monai.networks import EpsSegHVAE

    return ProbabilityPredictor(EpsSegHVAE(**network_args).dense_predictor())


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sample_image(path: str | os.PathLike | None, spatial_dims: int, in_channels: int, side: int) -> Any:
    """``(in_channels, *spatial)`` raw intensities: a user's TIFF/NumPy sample, or a synthetic EM image."""
    import numpy as np

    if path is None:
        from epsseg_monai.data.synthetic import synthetic_em

        image = synthetic_em((side,) * spatial_dims, seed=0)[0].astype(np.float32)
        return np.repeat(image[None], in_channels, axis=0)
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"Sample image {file} not found; pass --sample_image with a TIFF or .npy file.")
    if file.suffix.lower() == ".npy":
        image = np.load(file)
    elif file.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        image = tifffile.imread(file)
    else:
        raise ValueError(f"Sample image {file}: use a .tif/.tiff or .npy file.")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == spatial_dims:
        image = image[None]
    if image.ndim != spatial_dims + 1 or image.shape[0] != in_channels:
        raise ValueError(
            f"Sample image {file} has shape {image.shape}; the network takes {in_channels} channel(s) of "
            f"{spatial_dims}D images (channel first)."
        )
    if not np.isfinite(image).all():
        raise ValueError(f"Sample image {file} holds NaN or infinite values.")
    return image


def export_bioimageio(
    bundle_root: str | os.PathLike,
    output: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    sample_image: str | os.PathLike | None = None,
    name: str = "epsseg dense segmentation",
    authors: Sequence[str] = ("epsseg-monai developers",),
    license: str = "BSD-3-Clause",  # noqa: A002 - the spec's field name
    overwrite: bool = False,
) -> Path:
    """Write a bioimage.io model package (zip) of the bundle's dense predictor (see the module docstring).

    Args:
        bundle_root: the bundle folder (``models/model.pt``, ``network.json``, ``intensity_stats.json``).
        output: the ``.zip`` to write.
        checkpoint: the weights (default ``models/model.pt``).
        sample_image: test input (a TIFF or ``.npy`` file of raw intensities, channel first when several
            channels; at least the package's minimal size); ``None``: a synthetic EM image.
        name: the model's name in the package.
        authors: the model's authors (who trained it).
        license: SPDX licence identifier of the package.
        overwrite: replace an existing ``output``.

    Raises:
        ImportError: without ``bioimageio.core`` (the ``[bioimageio]`` extra).
    """
    import datetime
    import tempfile

    import numpy as np

    try:
        from bioimageio.spec import load_description, save_bioimageio_package
        from bioimageio.spec.model.v0_5 import ModelDescr
    except ImportError as e:
        raise ImportError(
            'The bioimage.io export needs bioimageio.core: pip install "epsseg-monai[bioimageio]".'
        ) from e
    from PIL import Image

    from epsseg_monai.transforms.overlay import grey_image, label_overlay

    out = Path(output)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite true to replace it, or choose another --output.")
    net, config = load_trained_network(bundle_root, checkpoint)
    model = ProbabilityPredictor(net.dense_predictor())
    dims, channels = model.predictor.spatial_dims, model.predictor.in_channels
    halo = model.predictor.receptive_field
    min_side = 2 * halo + 2
    image = _sample_image(sample_image, dims, channels, max(min_side, 256 if dims == 2 else min_side))
    if min(image.shape[1:]) < min_side:
        raise SampleImageTooSmallError(
            f"Sample image of shape {image.shape[1:]} is smaller than the package's minimal size {min_side} per axis "
            f"(twice the receptive field {halo} px, plus 2); use a larger --sample_image."
        )
    stats = config["intensity_stats"]
    mean = np.asarray(stats["mean"], dtype=np.float32).reshape((-1,) + (1,) * dims)
    std = np.asarray(stats["std"], dtype=np.float32).reshape((-1,) + (1,) * dims)
    x = torch.from_numpy((image - mean) / std)[None]
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        probs = traced(x).numpy()
    class_names = [str(c) for c in config["class_names"]]
    axis_ids = ["z", "y", "x"][-dims:]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.jit.save(traced, os.fspath(folder / "weights_torchscript.pt"))
        torch.save(model.state_dict(), folder / "weights.pt")
        np.save(folder / "test_input.npy", image[None].astype(np.float32))
        np.save(folder / "test_output.npy", probs.astype(np.float32))
        labels = probs[0].argmax(0) + 1
        if dims == 2:
            grey, over = grey_image(image), label_overlay(image, labels)
        else:
            middle = image.shape[1] // 2
            grey, over = grey_image(image[:, middle]), label_overlay(image[:, middle], labels[middle])
        cover = np.concatenate([np.repeat(grey[..., None], 3, axis=-1), over], axis=1)
        Image.fromarray(cover).save(folder / "cover.png")
        (folder / "README.md").write_text(
            f"# {name}\n\nε-Seg (arXiv:2510.18637) trained with epsseg-monai from sparse clicks. Input: "
            f"{channels}-channel {dims}D images (raw intensities; the package normalises them with the training "
            f"statistics). Output: per-pixel probabilities of the classes {', '.join(class_names)} (channel k is "
            f"label id k + 1). The output halo ({halo} px) is the network's receptive field: tiles with that margin "
            "give the untiled result.\n"
        )
        preprocessing: list[dict[str, Any]] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
        if channels == 1:
            norm = {"mean": float(stats["mean"][0]), "std": float(stats["std"][0])}
        else:
            norm = {
                "axis": "channel",
                "mean": [float(v) for v in stats["mean"]],
                "std": [float(v) for v in stats["std"]],
            }
        preprocessing.append({"id": "fixed_zero_mean_unit_variance", "kwargs": norm})
        torch_version = torch.__version__.split("+")[0]
        rdf = {
            "format_version": ModelDescr.implemented_format_version,
            "type": "model",
            "name": name,
            "description": "Dense semantic segmentation from sparse clicks with ε-Seg (epsseg-monai).",
            "authors": [{"name": a} for a in authors],
            "cite": [CITATION],
            "license": license,
            "tags": ["epsseg", "segmentation", "semantic-segmentation", "sparse-annotation", f"{dims}d", "pytorch"],
            "documentation": {"source": "README.md"},
            "covers": [{"source": "cover.png"}],
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "inputs": [
                {
                    "id": "image",
                    "description": "raw intensities, normalised by the package with the training statistics",
                    "axes": [
                        {"type": "batch"},
                        {"type": "channel", "channel_names": [f"channel{c}" for c in range(channels)]},
                        *({"type": "space", "id": a, "size": {"min": min_side, "step": 1}} for a in axis_ids),
                    ],
                    "test_tensor": {"source": "test_input.npy", "sha256": _sha256(folder / "test_input.npy")},
                    "pad": {"mode": "reflect"},
                    "preprocessing": preprocessing,
                }
            ],
            "outputs": [
                {
                    "id": "probabilities",
                    "description": "per-pixel class probabilities; channel k is label id k + 1",
                    "axes": [
                        {"type": "batch"},
                        {"type": "channel", "channel_names": class_names},
                        *(
                            {"type": "space", "id": a, "halo": halo, "size": {"tensor_id": "image", "axis_id": a}}
                            for a in axis_ids
                        ),
                    ],
                    "test_tensor": {"source": "test_output.npy", "sha256": _sha256(folder / "test_output.npy")},
                    "data": {"type": "float32", "range": [0.0, 1.0]},
                }
            ],
            "weights": {
                "pytorch_state_dict": {
                    "source": "weights.pt",
                    "sha256": _sha256(folder / "weights.pt"),
                    "architecture": {
                        "callable": "bioimageio_predictor",
                        "import_from": "epsseg_monai.export",
                        "kwargs": {"network_args": config["network"]},
                    },
                    "pytorch_version": torch_version,
                },
                "torchscript": {
                    "source": "weights_torchscript.pt",
                    "sha256": _sha256(folder / "weights_torchscript.pt"),
                    "parent": "pytorch_state_dict",
                    "pytorch_version": torch_version,
                },
            },
        }
        (folder / "bioimageio.yaml").write_text(json.dumps(rdf, indent=2, ensure_ascii=False))  # JSON is YAML
        descr = load_description(folder / "bioimageio.yaml", perform_io_checks=False)
        if not isinstance(descr, ModelDescr):
            problems = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in descr.validation_summary.errors)
            raise RuntimeError(f"The bioimage.io description is invalid ({problems}); please report it.")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_zip = out.with_name(out.name + ".tmp.zip")
        save_bioimageio_package(descr, output_path=tmp_zip)
        os.replace(tmp_zip, out)
    return out


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m epsseg_monai.export {torchscript,onnx,bioimageio} --bundle_root B --output F``."""
    parser = argparse.ArgumentParser(prog="python -m epsseg_monai.export", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="format", required=True)
    ts = sub.add_parser("torchscript", help="the dense predictor as a traced TorchScript module")
    ts.add_argument("--bundle_root", default="bundle", help="bundle folder holding models/ (default: bundle)")
    ts.add_argument("--checkpoint", default=None, help="weights (default: BUNDLE/models/model.pt)")
    ts.add_argument("--output", required=True, help="the .ts file to write")
    ts.add_argument("--valid", type=_bool, default=False, help="export the valid pass (no border padding)")
    ts.add_argument("--overwrite", type=_bool, default=False, help="replace an existing output file")
    onx = sub.add_parser("onnx", help="the dense predictor as ONNX (needs the [onnx] extra)")
    onx.add_argument("--bundle_root", default="bundle", help="bundle folder holding models/ (default: bundle)")
    onx.add_argument("--checkpoint", default=None, help="weights (default: BUNDLE/models/model.pt)")
    onx.add_argument("--output", required=True, help="the .onnx file to write")
    onx.add_argument("--valid", type=_bool, default=False, help="export the valid pass (no border padding)")
    onx.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    onx.add_argument("--overwrite", type=_bool, default=False, help="replace an existing output file")
    bio = sub.add_parser("bioimageio", help="a bioimage.io model package (zip; needs the [bioimageio] extra)")
    bio.add_argument("--bundle_root", default="bundle", help="bundle folder holding models/ (default: bundle)")
    bio.add_argument("--checkpoint", default=None, help="weights (default: BUNDLE/models/model.pt)")
    bio.add_argument("--output", required=True, help="the .zip to write")
    bio.add_argument("--sample_image", default=None, help="test input: TIFF or .npy raw image (default: synthetic)")
    bio.add_argument("--name", default="epsseg dense segmentation", help="the model's name")
    bio.add_argument("--authors", nargs="+", default=["epsseg-monai developers"], help="who trained the model")
    bio.add_argument("--license", default="BSD-3-Clause", help="SPDX licence id of the package")
    bio.add_argument("--overwrite", type=_bool, default=False, help="replace an existing output file")
    args = parser.parse_args(argv)
    try:
        if args.format == "torchscript":
            path = export_torchscript(args.bundle_root, args.output, args.checkpoint, args.valid, args.overwrite)
        elif args.format == "onnx":
            path = export_onnx(args.bundle_root, args.output, args.checkpoint, args.valid, args.overwrite, args.opset)
        else:
            path = export_bioimageio(
                args.bundle_root,
                args.output,
                args.checkpoint,
                args.sample_image,
                args.name,
                args.authors,
                args.license,
                args.overwrite,
            )
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
