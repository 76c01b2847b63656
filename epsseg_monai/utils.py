"""Conventions shared by every component: where a patch's centre is, and what a sparse label is.

One centre convention is used everywhere (sampler, mask, inpainting loss, segmentation head, inferers):
the centre of a patch of side ``p`` is the voxel at index ``p // 2`` along each spatial axis. A centre
region of side ``m`` starts at ``p // 2 - m // 2``. The reference code mixes ``p // 2 - 1`` (training)
and ``p // 2`` (prediction); this package does not. Rotating or flipping a patch of even side moves
index ``p // 2`` to ``p // 2 - 1``, so the bundle's training augmentation draws patches of odd side ``p + 1``
(centre ``p // 2`` kept by every rotation and flip) and crops them to ``p`` afterwards.

Sparse labels follow the napari Labels convention: ``0`` = unlabelled, ``1..C`` = class id.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "UNLABELLED",
    "center_index",
    "center_region_slices",
    "center_region_mask",
    "check_sparse_labels",
    "unwrap_network",
]

#: Label value of pixels (or samples) without annotation.
UNLABELLED = 0


def unwrap_network(network: Any) -> Any:
    """The network inside a ``DataParallel`` / ``DistributedDataParallel`` wrapper, or ``network`` itself.

    Saving, loading, averaging and the dense pass all work on the inner network, so that a checkpoint written
    under ``torchrun`` loads into a plain network and the other way round.
    """
    if isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return network.module
    return network


def center_index(size: int) -> int:
    """Index of the centre voxel along an axis of ``size`` voxels (``size // 2``)."""
    return int(size) // 2


def center_region_slices(spatial_shape: Sequence[int], region_size: int | Sequence[int]) -> tuple[slice, ...]:
    """Slices selecting the centre region of side ``region_size`` of an array of ``spatial_shape``.

    Args:
        spatial_shape: spatial shape of the patch, e.g. ``(64, 64)``.
        region_size: side of the centre square/cube; an int applies to every axis.

    Raises:
        ValueError: when the region is empty or larger than the patch.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    sizes = (int(region_size),) * len(spatial_shape) if np.isscalar(region_size) else tuple(region_size)
    if len(sizes) != len(spatial_shape):
        raise ValueError(f"region_size {region_size} does not match spatial shape {spatial_shape}.")
    slices = []
    for size, m in zip(spatial_shape, sizes):
        if m < 1 or m > size:
            raise ValueError(f"Centre region of side {m} does not fit a patch of spatial shape {spatial_shape}.")
        start = center_index(size) - m // 2
        slices.append(slice(start, start + m))
    return tuple(slices)


def center_region_mask(
    spatial_shape: Sequence[int], region_size: int | Sequence[int], device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean tensor of ``spatial_shape`` that is ``True`` on the centre region (see :func:`center_region_slices`)."""
    mask = torch.zeros(tuple(int(s) for s in spatial_shape), dtype=torch.bool, device=device)
    mask[center_region_slices(spatial_shape, region_size)] = True
    return mask


def check_sparse_labels(
    labels: np.ndarray | torch.Tensor, num_classes: int | None = None, name: str = "labels"
) -> None:
    """Raise a ``ValueError`` that says what to fix when ``labels`` is not a valid sparse label array.

    Valid: integer-valued, no NaN, values in ``0..num_classes`` (``0`` = unlabelled).

    Args:
        labels: sparse labels (any shape).
        num_classes: number of classes ``C``; when given, ids above ``C`` are refused.
        name: what to call the array in the message (e.g. a file name).
    """
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.size == 0:
        raise ValueError(f"{name} is empty.")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values; sparse labels must be integers 0..C.")
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} contains non-integer values; sparse labels must be integers 0..C.")
    elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"{name} has dtype {arr.dtype}; sparse labels must be integers 0..C.")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise ValueError(f"{name} contains negative ids (min {lo}); use 0 for unlabelled and 1..C for classes.")
    if num_classes is not None and hi > num_classes:
        raise ValueError(
            f"{name} contains class id {hi} but num_classes={num_classes}; "
            f"use ids 1..{num_classes} (0 = unlabelled) or raise num_classes."
        )


def labels_from_probabilities(probs: np.ndarray | torch.Tensor, dim: int = 0) -> np.ndarray | torch.Tensor:
    """Class ids ``1..C`` (argmax + 1 along ``dim``) of class probabilities, ``0`` where all are 0.

    All-zero probabilities mark pixels an inferer did not predict (a sampled subset, a mask). Works on
    numpy arrays and torch tensors and returns the same type.

    Args:
        probs: class probabilities with the classes along ``dim``.
        dim: the class axis.
    """
    labels = probs.argmax(dim) + 1
    labels[~(probs > 0).any(dim)] = 0
    return labels


#: Where :func:`fast_bfloat16` reads the CPU flags (Linux).
CPUINFO = "/proc/cpuinfo"


def fast_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively, so that ``torch.autocast`` to bfloat16 speeds it up.

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: the x86 flags ``avx512_bf16`` or ``amx_bf16`` in
    ``/proc/cpuinfo`` (Linux); elsewhere ``False``, since emulated bfloat16 is slower than float32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open(CPUINFO, encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def as_flag(value: Any, name: str, allow_auto: bool = False) -> bool | str:
    """A boolean option as given on the command line, as a ``bool`` (or ``"auto"`` where allowed).

    ``python -m monai.bundle run ... --overwrite false`` hands the config the *string* ``"false"``, which Python
    takes as true. The bundle configs read every boolean option through this function, so ``true``/``false`` (any
    case), ``yes``/``no``, ``on``/``off``, ``1``/``0`` and real booleans all mean what they say, and anything else
    is refused naming the option.

    Args:
        value: the option's value.
        name: the option's name, for the message.
        allow_auto: also accept ``"auto"`` (returned as ``"auto"``).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        if allow_auto and word == "auto":
            return "auto"
    choices = "true, false or auto" if allow_auto else "true or false"
    raise ValueError(f"--{name} must be {choices}, got {value!r}.")


def check_amp(amp: bool | str) -> bool | str:
    """Return ``amp`` as ``True``, ``False`` or ``"auto"`` (see :func:`as_flag`), else raise."""
    return as_flag(amp, "amp", allow_auto=True)


def use_bfloat16(amp: bool | str, device: torch.device | str) -> bool:
    """Whether the option ``amp`` (see :func:`check_amp`) computes in bfloat16 on ``device``: ``"auto"`` follows
    :func:`fast_bfloat16`."""
    amp = check_amp(amp)
    return fast_bfloat16(device) if amp == "auto" else bool(amp)


def invalid_option(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise a ``ValueError`` for a config option outside its ``choices`` (for bundle config expressions)."""
    raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(repr(c) for c in choices)}.")


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, failing with a message that names the file
    and the fix when it is missing, unreadable or not a PyTorch checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Checkpoint {path} not found; train first (bundle/configs/train.json writes models/model.pt) "
            "or pass --checkpoint pointing at trained weights."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        detail = (str(e).strip().splitlines() or [""])[0][:200]  # torch's first line; its advice is not ours
        raise ValueError(
            f"Checkpoint {path} cannot be read ({type(e).__name__}: {detail}); it is corrupt or not a "
            "PyTorch checkpoint. Retrain, or use the best/last checkpoint from models/."
        ) from e


def network_shape_mismatches(state: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Names of the tensors in the checkpoint's ``state`` whose shape differs from the network's state dict
    ``expected``, in ``state``'s order; names that ``expected`` lacks are not compared."""
    return [k for k, v in state.items() if k in expected and tuple(getattr(v, "shape", ())) != tuple(expected[k].shape)]


def check_checkpoint(path: str | os.PathLike, network: torch.nn.Module | None = None, key: str = "model") -> str:
    """Fail early, naming the file and the fix, when a checkpoint is missing, unreadable or does not fit.

    Args:
        path: checkpoint file (a state dict, or a dict holding one under ``key``).
        network: when given, the parameter names and shapes must match its state dict.
        key: entry of the model's state dict in a multi-object checkpoint.

    Returns:
        ``path`` as a string, so a bundle config can chain it into ``CheckpointLoader``.
    """
    path = os.fspath(path)
    state = load_checkpoint(path)
    if network is not None:
        check_network_state(state, network, path, key)
    return path


def check_network_state(state: Any, network: torch.nn.Module, path: str | os.PathLike, key: str = "model") -> Any:
    """Check that a loaded checkpoint ``state`` (read from ``path``, named in the errors) holds the weights of
    ``network``: the same parameter names and shapes (see :func:`check_checkpoint`).

    Returns:
        The network's state dict: ``state`` itself or ``state[key]``.
    """
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    expected = unwrap_network(network).state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        raise ValueError(
            f"Checkpoint {path} does not hold the weights of this network (different parameter "
            "names); check that it was trained with this bundle."
        )
    mismatched = network_shape_mismatches(state, expected)
    if mismatched:
        name = mismatched[0]
        raise ValueError(
            f"Checkpoint {path} was trained with other network sizes: {name} is {tuple(state[name].shape)} "
            f"there but {tuple(expected[name].shape)} here. Keep the network.json that training wrote next to it "
            "(the network's sizes), or, from Python, build the network with the training's sizes."
        )
    return state


def check_even_crop(crop_size: int, patch_size: int, name: str = "crop_size", multiple: int = 2) -> int:
    """``crop_size`` if a patch of ``patch_size`` can be centre-cropped from it keeping the centre voxel.

    The centre voxel (index ``size // 2``) of the crop is that of its centre ``patch_size`` crop only when the
    two sides differ by an even number (a bundle config check; ``name`` is the option named in the error).
    ``multiple`` asks for more: a difference that is a multiple of it (e.g. ``2**num_levels``, so that the crop's
    centre is also a cell centre of every level the fine-detail head reads).
    """
    crop_size, patch_size, multiple = int(crop_size), int(patch_size), max(2, int(multiple))
    if crop_size < patch_size or (crop_size - patch_size) % multiple:
        raise ValueError(
            f"{name}={crop_size} must be at least patch_size={patch_size} and differ from it by a multiple of "
            f"{multiple}, so that the crop and its centre patch share the centre pixel."
        )
    return crop_size


#: How MONAI wraps an error raised while its config parser builds a component or evaluates an expression, or while
#: a ``Compose`` applies a transform.
_CONFIG_WRAPPERS = ("Failed to instantiate", "Failed to evaluate", "applying transform")


def root_cause(error: BaseException) -> BaseException:
    """The error under MONAI's config wrappers: follows ``error``'s chain (``__cause__``, else ``__context__``) past
    the ``RuntimeError("Failed to instantiate ...")`` / ``("Failed to evaluate ...")`` layers and stops at the first
    other exception, the one that says what is wrong (ours, naming the file and the fix), not at the low-level
    error it may have been raised from (e.g. torch's ``EOFError`` under "checkpoint cannot be read")."""
    seen = {id(error)}
    while (
        isinstance(error, RuntimeError)
        and str(error).startswith(_CONFIG_WRAPPERS)
        and (inner := error.__cause__ or error.__context__) is not None
        and id(inner) not in seen
    ):
        seen.add(id(inner))
        error = inner
    return error


def install_error_hook() -> None:
    """Make the last line of a failed ``python -m monai.bundle run`` the cause's message, not the wrapper's.

    MONAI's config parser wraps an error raised while it builds a component or evaluates an expression in
    ``RuntimeError("Failed to instantiate component ...")``; the message that names the file and the fix (ours)
    then sits far up the traceback. This hook prints the traceback as usual, then repeats the error under the
    wrappers (:func:`root_cause`) as the last line. The bundle configs call it first thing in ``initialize``;
    calling it twice is harmless. In a ``python -m monai.bundle run`` process the hook then ends the process
    (exit code 1) without the interpreter's shutdown, where leftover data-loading threads can abort with a C++
    "terminate called" line that would otherwise become the last line.
    """
    import sys

    previous = sys.excepthook
    if getattr(previous, "_epsseg_hook", False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: object) -> None:
        previous(exc_type, exc, tb)
        cause = root_cause(exc)
        if isinstance(cause, KeyboardInterrupt):
            return
        if cause is not exc:
            message = " ".join(str(cause).split())  # one line, however the message was wrapped
            print(f"Error: {type(cause).__name__}: {message}", file=sys.stderr)
        if requested_run_id() is not None and "LOCAL_RANK" not in os.environ:  # a bundle run (not under torchrun,
            # whose output pipes a hard exit would cut short): nothing left to do but exit
            import logging

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)

    hook._epsseg_hook = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def requested_run_id(argv: Sequence[str] | None = None) -> str | None:
    """The run id of a ``python -m monai.bundle run RUN_ID ...`` command line (``None`` when not run that way).

    MONAI's default run id ``run`` is returned when none is given.
    """
    import sys

    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or not argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py") or argv[1] != "run":
        return None
    for i, arg in enumerate(argv[2:], start=2):
        if arg.startswith("--run_id="):
            return arg.split("=", 1)[1]
        if arg == "--run_id" and i + 1 < len(argv):
            return argv[i + 1]
    if len(argv) > 2 and not argv[2].startswith("-"):
        return argv[2]
    return "run"


def check_run_id(valid: Sequence[str], argv: Sequence[str] | None = None) -> None:
    """Refuse a ``python -m monai.bundle run RUN_ID`` whose run id the config does not define.

    MONAI runs nothing and exits 0 for an unknown run id, so a typo (``run trainig``) looks like a finished run.
    The bundle configs call this in ``initialize`` with their run ids.
    """
    run_id = requested_run_id(argv)
    if run_id is not None and run_id not in valid:
        raise ValueError(
            f"Unknown run id {run_id!r}: this config runs {', '.join(repr(v) for v in valid)} "
            f"(e.g. python -m monai.bundle run {valid[0]} --config_file ...)."
        )


def refuse_overlay_combination(large_image: bool = False, multi_gpu: bool = False) -> None:
    """Refuse ``multi_gpu_inference.json`` applied after ``large_image_inference.json``.

    Both overlays replace ``initialize`` and ``inference`` of ``inference.json``, so the later one wins: with the
    multi-GPU overlay last, every rank would predict its share of the input files with the in-memory pipeline and
    the large-image settings would be ignored. The large-image overlay goes last instead (it then shares the tiles
    of each image out over the ranks). Each overlay sets its flag (``large_image_overlay``, ``multi_gpu_overlay``;
    ``inference.json`` has both ``false``); ``multi_gpu_inference.json`` calls this in ``initialize`` before
    anything is read or written.
    """
    if large_image and multi_gpu:
        raise ValueError(
            "multi_gpu_inference.json after large_image_inference.json would ignore the large-image settings. Put "
            "large_image_inference.json last: --config_file \"['bundle/configs/inference.json',"
            "'bundle/configs/multi_gpu_inference.json','bundle/configs/large_image_inference.json']\" (the ranks "
            "then share the tiles of each image)."
        )


def init_distributed(enabled: bool, device: torch.device | str | None = None) -> bool:
    """Join the ``torchrun`` process group when ``enabled`` (``nccl`` on GPUs, ``gloo`` on CPU) and make ``device``
    the current CUDA device; a no-op when not enabled or already joined. Returns whether a group is running."""
    import torch.distributed as dist

    if not as_flag(enabled, "multi_gpu_overlay"):
        return dist.is_available() and dist.is_initialized()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_device(device)
    return True


def destroy_distributed() -> None:
    """Leave the process group :func:`init_distributed` (or a bundle overlay) joined; a no-op outside one.

    The ranks meet at a barrier first, so no rank tears its ``gloo``/``nccl`` connections down while another still
    finishes its last collective or write: a rank that left early was seen to abort at exit ("terminate called
    without an active exception", SIGABRT) and fail a run whose work was all done.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def refuse_options(reason: str, limit: int = 1, **options: Any) -> None:
    """Refuse a run where more than ``limit`` of the named boolean options are on (``reason`` says why and what to
    do instead); ``limit=0`` refuses each of them.

    Example: ``refuse_options("both rescale the class probabilities", adjust_priors=True, calibrate_priors=True)``
    fails naming ``--adjust_priors`` and ``--calibrate_priors``.
    """
    on = [f"--{name}" for name, value in options.items() if as_flag(value, name)]
    if len(on) > limit:
        where = "here" if limit == 0 else "together"
        raise ValueError(f"{' and '.join(on)} cannot be used {where}: {reason}")


def is_distributed() -> bool:
    """``True`` inside a ``torch.distributed`` process group of more than one process (``torchrun``)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """``True`` outside a process group and on rank 0 inside one: the process that writes files and logs."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def all_reduce_max(value: float) -> float:
    """The largest ``value`` over the ranks of the process group (``value`` itself outside one)."""
    if not is_distributed():
        return float(value)
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def write_text_atomic(path: str | os.PathLike, text: str) -> Path | None:
    """Write ``text`` to ``path`` (creating the folder) through a temporary file renamed into place, so a crash
    never leaves a half-written file; under ``torchrun`` only rank 0 writes (returns ``None`` on the others)."""
    if not is_main_process():
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
