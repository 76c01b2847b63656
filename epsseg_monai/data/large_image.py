"""Images larger than memory: read TIFF memory-mapped and OME-Zarr lazily, write predictions tile by tile.

:func:`open_lazy` gives a channel-first ``(C, *spatial)`` array-like of an image without reading its pixels:
an uncompressed TIFF is memory-mapped (``tifffile.memmap``), a compressed one (LZW from Fiji, ...) is read chunk by
chunk through ``tifffile``'s zarr store, an OME-Zarr (``.ome.zarr``/``.zarr`` folder, NGFF 0.4 or 0.5) through
``zarr`` at its full-resolution level. :func:`create_output` makes the output the same way: an OME-Zarr image
(``ome-zarr`` writes the NGFF metadata) or a memory-mapped BigTIFF. :func:`predict_large_images` runs
:meth:`DenseInferer.predict_array <epsseg_monai.inferers.DenseInferer.predict_array>` from one to the other with
a :class:`PredictionSink`, so only one tile's maps are ever in memory: the bundle's
``configs/large_image_inference.json`` overlay. 2D images and 3D volumes alike. Under ``torchrun``
(``distributed=True``, the overlay after ``multi_gpu_inference.json``) the tiles of each image are shared out over
the ranks, which write into the same outputs: each tile is predicted and written once.

``zarr`` and ``ome-zarr`` are the optional ``[zarr]`` extra; TIFF in and out needs neither.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import ensure_tuple_rep

from ..utils import unwrap_network
from .image_io import image_stem

__all__ = [
    "LARGE_IMAGE_SUFFIXES",
    "PredictionSink",
    "create_output",
    "is_zarr",
    "open_output",
    "large_image_files",
    "open_lazy",
    "predict_large_images",
]

logger = logging.getLogger(__name__)

LARGE_IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr")


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (``.zarr``/``.ome.zarr``)."""
    return str(path).rstrip("/").lower().endswith(".zarr")


def _stem(path: str | os.PathLike) -> str:
    """The name of ``path`` without ``.ome.zarr``/``.zarr``, or :func:`~epsseg_monai.data.image_io.image_stem`'s."""
    name = Path(str(path).rstrip("/")).name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return image_stem(name)


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as e:
        raise ImportError('Reading or writing OME-Zarr needs zarr: pip install "epsseg-monai[zarr]".') from e
    return zarr


class _ChannelFirst:
    """A lazy view of an array with a channel axis added (or moved) to the front; slicing reads only the slice."""

    def __init__(self, array: Any, channel_axis: int | None) -> None:
        self.array, self.channel_axis = array, channel_axis
        shape = tuple(int(s) for s in array.shape)
        if channel_axis is None:
            self.shape = (1, *shape)
        else:
            self.shape = (shape[channel_axis], *shape[:channel_axis], *shape[channel_axis + 1 :])
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        channel, spatial = key[0], key[1:]
        if self.channel_axis is None:
            return np.asarray(self.array[spatial])[None][channel]
        full = spatial[: self.channel_axis] + (channel,) + spatial[self.channel_axis :]
        return np.moveaxis(np.asarray(self.array[full]), self.channel_axis, 0)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[(slice(None),)]
        return out.astype(dtype) if dtype is not None else out


def _ngff_level0(group: Any) -> tuple[Any, list[str] | None]:
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise ValueError(f"{group.store} is a zarr group without OME-NGFF 'multiscales' metadata; pass its array.")
    first = multiscales[0]
    axes = [a["name"] if isinstance(a, dict) else str(a) for a in first.get("axes", [])] or None
    return group[first["datasets"][0]["path"]], axes


def open_lazy(path: str | os.PathLike, spatial_dims: int, in_channels: int = 1) -> Any:
    """A channel-first ``(C, *spatial)`` array-like of the image at ``path``, read only where sliced.

    Args:
        path: a TIFF file or an OME-Zarr (or plain zarr array) folder.
        spatial_dims: 2 (``(Y, X)``) or 3 (``(Z, Y, X)``).
        in_channels: the number of channels the network takes (a leading axis of that length, or an OME-Zarr
            ``c`` axis, is the channel axis; unit axes, e.g. OME-Zarr's ``t``, are dropped).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: its dimensions do not fit ``spatial_dims``/``in_channels``; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; point --input_dir at a folder of .tif or .ome.zarr images.")
    axes: list[str] | None = None
    if is_zarr(path):
        zarr = _zarr()
        node = zarr.open(str(path), mode="r")
        array, axes = _ngff_level0(node) if hasattr(node, "group_keys") else (node, None)
    else:
        import tifffile

        try:
            array = tifffile.memmap(path, mode="r")
        except ValueError:  # compressed or not contiguous: decode chunk by chunk through tifffile's zarr store
            zarr = _zarr()
            store = tifffile.imread(path, aszarr=True)
            node = zarr.open(store, mode="r")
            array = node if not hasattr(node, "group_keys") else node[sorted(node.array_keys())[0]]
    shape = tuple(int(s) for s in array.shape)
    # drop unit axes beyond what is needed (OME-Zarr t/c/z of length 1), keep track of a channel axis
    keep = [i for i, s in enumerate(shape) if s != 1 or len(shape) - i <= spatial_dims]
    if axes is not None and len(axes) == len(shape):
        channel_axis = axes.index("c") if "c" in axes and shape[axes.index("c")] > 1 else None
    else:
        channel_axis = None
    if len(keep) == spatial_dims + 1 and channel_axis is None:
        channel_axis = keep[0]  # a leading channel axis
    if len(keep) not in (spatial_dims, spatial_dims + 1) or (channel_axis is not None and channel_axis not in keep):
        raise ValueError(
            f"{path} has shape {shape}; this model takes {spatial_dims}D images with {in_channels} channel(s) "
            f"({'(C, Z, Y, X)' if spatial_dims == 3 else '(C, Y, X)'} or without the channel axis)."
        )
    if len(keep) < len(shape):  # index the unit axes away lazily
        view = _Squeezed(array, [i for i in range(len(shape)) if i not in keep])
        channel_axis = keep.index(channel_axis) if channel_axis is not None else None
        array = view
    lazy = _ChannelFirst(array, channel_axis)
    if lazy.shape[0] != in_channels:
        raise ValueError(f"{path} has {lazy.shape[0]} channel(s) but the model takes {in_channels}.")
    return lazy


class _Squeezed:
    """A lazy view of ``array`` without its unit axes ``drop``."""

    def __init__(self, array: Any, drop: Sequence[int]) -> None:
        self.array, self.drop = array, set(drop)
        self.shape = tuple(int(s) for i, s in enumerate(array.shape) if i not in self.drop)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = list(key) + [slice(None)] * (self.ndim - len(key))
        full, it = [], iter(key)
        for i in range(len(self.array.shape)):
            full.append(0 if i in self.drop else next(it))
        return np.asarray(self.array[tuple(full)])


def create_output(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: Any,
    axes: str,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
) -> Any:
    """A writable array for a prediction: an OME-Zarr image (``.ome.zarr``/``.zarr``) or a memory-mapped BigTIFF.

    Args:
        path: the output; its suffix picks the format.
        shape: the array's shape.
        dtype: the array's dtype.
        axes: one letter per axis of ``shape`` (``"yx"``, ``"zyx"``, ``"cyx"``, ``"czyx"``), for the OME-NGFF
            metadata.
        chunks: zarr chunk shape (default: 1 along a channel axis, up to 1024 per spatial axis).
        overwrite: replace an existing output (otherwise refused, naming the file).

    Returns:
        The array (a ``zarr.Array``, or a ``numpy.memmap``; call ``.flush()`` when done).
    """
    path = Path(path)
    shape = tuple(int(s) for s in shape)
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes!r} do not match the shape {shape}.")
    if path.exists():
        if not overwrite:
            raise FileExistsError(
                f"{path} already exists; pass --overwrite true to replace it, or choose another --output_dir."
            )
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not is_zarr(path):
        import tifffile

        if axes.lower() == "czyx":  # as inference.json's TIFFs: ImageJ's Z, C, Y, X on disk, a C, Z, Y, X view
            c, z, y, x = shape
            disk = tifffile.memmap(path, shape=(z, c, y, x), dtype=dtype, bigtiff=True, metadata={"axes": "ZCYX"})
            return np.moveaxis(disk, 1, 0)
        return tifffile.memmap(path, shape=shape, dtype=dtype, bigtiff=True, metadata={"axes": axes.upper()})
    zarr = _zarr()
    try:
        from ome_zarr.format import CurrentFormat
        from ome_zarr.writer import write_multiscales_metadata
    except ImportError as e:
        raise ImportError('Writing OME-Zarr needs ome-zarr: pip install "epsseg-monai[zarr]".') from e
    if chunks is None:
        chunks = tuple(1 if a == "c" else min(s, 1024) for a, s in zip(axes, shape))
    fmt = CurrentFormat()
    group = zarr.open_group(str(path), mode="w", zarr_format=3 if str(fmt.version) >= "0.5" else 2)
    array = group.create_array("0", shape=shape, chunks=tuple(chunks), dtype=dtype, fill_value=0)
    write_multiscales_metadata(
        group,
        [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(shape)}]}],
        fmt=fmt,
        axes=[{"name": a, "type": _AXIS_TYPES.get(a, "space")} for a in axes],
        name=_stem(path),
    )
    return array


def open_output(path: str | os.PathLike, axes: str) -> Any:
    """Open an output made by :func:`create_output` (by another process) for writing, with the same view."""
    path = Path(path)
    if not is_zarr(path):
        import tifffile

        disk = tifffile.memmap(path, mode="r+")
        return np.moveaxis(disk, 1, 0) if axes.lower() == "czyx" else disk
    return _zarr().open_group(str(path), mode="r+")["0"]


_AXIS_TYPES = {"t": "time", "c": "channel"}  # OME-NGFF axis types; x, y, z are "space"


class PredictionSink:
    """The ``out`` of :meth:`DenseInferer.predict_array`: takes ``(K, *spatial)`` probability tiles and writes
    the label map (class ids ``1..K``, uint8) and optionally the probabilities and their normalised entropy.

    Args:
        labels: writable ``(*spatial)`` array.
        probabilities: writable ``(K, *spatial)`` float32 array or ``None``.
        uncertainty: writable ``(*spatial)`` float32 array or ``None``.
        transform: applied to each probability tile before anything is written; it must act on each pixel
            alone (e.g. :class:`~epsseg_monai.transforms.ShiftClassPriors`), so that tiles give the whole image's
            result.
    """

    def __init__(
        self,
        labels: Any,
        num_classes: int,
        probabilities: Any = None,
        uncertainty: Any = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.labels, self.probabilities, self.uncertainty = labels, probabilities, uncertainty
        self.transform = transform
        self.shape = (int(num_classes), *(int(s) for s in labels.shape))

    def __setitem__(self, key: tuple, value: np.ndarray) -> None:
        from ..inferers.dense import class_entropy  # as inference.json's outputs
        from ..utils import labels_from_probabilities

        spatial = tuple(key[1:])
        if self.transform is not None:  # a per-pixel rescaling (ShiftClassPriors): exact tile by tile
            value = np.asarray(self.transform(value))
        self.labels[spatial] = labels_from_probabilities(value, dim=0).astype(np.uint8)
        if self.probabilities is not None:
            self.probabilities[key] = value.astype(np.float32)
        if self.uncertainty is not None:
            entropy = class_entropy(torch.as_tensor(value[None], dtype=torch.float32))[0, 0].numpy()
            self.uncertainty[spatial] = entropy


def _tile_transform(prior_shift: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """A ``ShiftClassPriors`` (or its dictionary version, as the bundle builds it) as a function of one tile."""
    if prior_shift is None:
        return None
    shift = getattr(prior_shift, "shift", prior_shift)  # ShiftClassPriorsd holds its array transform
    if not callable(shift):
        raise TypeError(f"prior_shift must be a ShiftClassPriors(d) or None, got {type(prior_shift).__name__}.")
    return shift


def large_image_files(folder: str | os.PathLike) -> list[Path]:
    """The TIFF files and zarr folders of ``folder``, sorted (``folder`` may also be one such image)."""
    folder = Path(folder)
    if folder.name.lower().endswith(LARGE_IMAGE_SUFFIXES) and folder.exists():
        return [folder]
    if folder.is_file():
        raise ValueError(f"{folder} is not a .tif/.tiff/.ome.zarr image; point --input_dir at a folder of them.")
    if not folder.is_dir():
        raise FileNotFoundError(f"Input folder {folder} does not exist; point --input_dir at your images.")
    files = sorted(
        p for p in folder.iterdir() if p.name.lower().endswith(LARGE_IMAGE_SUFFIXES) and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(f"No .tif/.tiff/.ome.zarr images in {folder}; point --input_dir at them.")
    return files


def predict_large_images(
    inputs: Sequence[str | os.PathLike],
    network: Any,
    inferer: Any,
    intensity_stats: dict[str, list[float]],
    output_dir: str | os.PathLike,
    output_format: str = "ome.zarr",
    save_probabilities: bool = False,
    save_uncertainty: bool = False,
    overwrite: bool = False,
    prior_shift: Any = None,
    distributed: bool = False,
) -> list[Path]:
    """Predict every image of ``inputs`` out of core: read lazily, write ``<name>.<format>`` tile by tile.

    Args:
        inputs: TIFF files or OME-Zarr folders.
        network: the trained :class:`~epsseg_monai.networks.EpsSegHVAE`.
        inferer: a :class:`~epsseg_monai.inferers.DenseInferer` with a ``tile_size`` (what bounds memory).
        intensity_stats: the training run's ``intensity_stats.json`` content.
        output_dir: where ``<name>.ome.zarr`` (or ``<name>.tif``) and, when asked, ``<name>_prob.*`` and
            ``<name>_entropy.*`` are written.
        output_format: ``"ome.zarr"`` or ``"tif"``.
        save_probabilities: also write the class probabilities (``(K, *spatial)`` float32).
        save_uncertainty: also write the normalised entropy (0 = certain, 1 = uniform).
        overwrite: replace existing outputs (otherwise refused before anything is predicted).
        prior_shift: ``None``, or a :class:`~epsseg_monai.transforms.ShiftClassPriorsd` (``keys="pred"``, as
            ``inference.json --calibrate_priors true`` builds it) or :class:`~epsseg_monai.transforms.ShiftClassPriors`
            applied to every probability tile.
        distributed: inside a ``torch.distributed`` process group (``torchrun``), share the tiles of every image out
            over the ranks: all ranks check the outputs, rank 0 creates them, every rank predicts and writes every
            ``world_size``-th tile into them (zarr chunks are the tiles, so no chunk has two writers). Ignored
            outside a process group.

    Returns:
        The label-map outputs, one per input.
    """
    if output_format not in ("ome.zarr", "tif"):
        raise ValueError(f"output_format must be 'ome.zarr' or 'tif', got {output_format!r}.")
    if getattr(inferer, "tile_size", None) is None:
        raise ValueError(
            "Out-of-core prediction needs a tile size (--tile_size, e.g. 1024); without one the whole image is "
            "in memory."
        )
    net = unwrap_network(network)
    dims, channels = int(net.spatial_dims), int(getattr(net, "in_channels", 1))
    num_classes = int(net.head.net[-1].out_channels)
    out_dir = Path(output_dir).resolve()
    inputs = [Path(p) for p in inputs]
    for src in inputs:  # refuse before predicting anything
        if out_dir == src.resolve().parent or out_dir == src.resolve():
            raise FileExistsError(
                f"--output_dir {output_dir} is the folder of the input {src}; predictions are never written there. "
                "Choose another --output_dir."
            )
    plans = []
    for src in inputs:
        stem, ext = _stem(src), "." + output_format
        targets = {"labels": out_dir / f"{stem}{ext}"}
        if save_probabilities:
            targets["probabilities"] = out_dir / f"{stem}_prob{ext}"
        if save_uncertainty:
            targets["uncertainty"] = out_dir / f"{stem}_entropy{ext}"
        for target in targets.values():
            if target.exists() and not overwrite:
                raise FileExistsError(
                    f"{target} already exists (an earlier prediction?); pass --overwrite true to replace it, or "
                    "choose another --output_dir."
                )
        plans.append((src, targets))
    rank, world = _rank_and_world(distributed)
    _barrier(world)  # every rank has checked the outputs before rank 0 creates any
    tile = ensure_tuple_rep(inferer.tile_size, dims)
    written = []
    for src, targets in plans:
        image = open_lazy(src, dims, channels)
        spatial = image.shape[1:]
        chunks = tuple(min(int(s), int(t)) for s, t in zip(spatial, tile))  # a tile's write region is a chunk
        axes = "zyx"[3 - dims :]
        layout = {
            "labels": ((*spatial,), np.uint8, axes, chunks),
            "probabilities": ((num_classes, *spatial), np.float32, "c" + axes, (1, *chunks)),
            "uncertainty": ((*spatial,), np.float32, axes, chunks),
        }
        if rank == 0:
            logger.info(f"Predicting {src} {tuple(spatial)} tile by tile into {targets['labels']}"
                        + (f" on {world} processes" if world > 1 else ""))  # fmt: skip
        arrays = _shared_outputs(targets, layout, rank, world, overwrite)
        sink = PredictionSink(
            arrays["labels"], num_classes, arrays.get("probabilities"), arrays.get("uncertainty"),
            transform=_tile_transform(prior_shift),
        )  # fmt: skip
        inferer.predict_array(
            image, network, out=sink, mean=intensity_stats["mean"], std=intensity_stats["std"],
            shard=(rank, world) if world > 1 else None,
        )  # fmt: skip
        for array in arrays.values():
            if hasattr(array, "flush"):
                array.flush()
        del arrays, sink
        _barrier(world)  # the image is complete when every rank has written its tiles
        written.append(targets["labels"])
    return written


def _rank_and_world(distributed: bool) -> tuple[int, int]:
    import torch.distributed as dist

    if distributed and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _shared_outputs(
    targets: dict[str, Path], layout: dict[str, tuple], rank: int, world: int, overwrite: bool
) -> dict[str, Any]:
    """Rank 0 creates the outputs (:func:`create_output`), the other ranks then open them (:func:`open_output`);
    an error on rank 0 is raised on every rank, so that none waits for outputs that will not come."""
    arrays: dict[str, Any] = {}
    error = None
    if rank == 0:
        try:
            for name, target in targets.items():
                shape, dtype, axes, chunks = layout[name]
                arrays[name] = create_output(target, shape, dtype, axes, chunks=chunks, overwrite=overwrite)
        except Exception as e:  # shared with the other ranks below, then raised here
            error = e
    if world > 1:
        import torch.distributed as dist

        message = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(message, src=0)
        if rank != 0 and message[0] is not None:
            raise RuntimeError(f"Rank 0 could not create the outputs: {message[0]}")
    if error is not None:
        raise error
    if rank != 0:
        arrays = {name: open_output(target, layout[name][2]) for name, target in targets.items()}
    return arrays
