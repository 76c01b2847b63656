"""Write predicted label maps (and optionally class probabilities, uncertainty and a preview) in the input's format."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_numpy

from ..data.image_io import image_stem, is_nifti
from ..inferers.dense import class_entropy
from ..utils import labels_from_probabilities
from .click_suggestions import write_clicks_csv
from .overlay import label_overlay

__all__ = ["SaveSegmentationD", "SaveSegmentationDict", "SaveSegmentationd", "probabilities_to_labels"]


def probabilities_to_labels(probs: torch.Tensor | np.ndarray) -> np.ndarray:
    """Class ids ``1..C`` (argmax + 1) of channel-first probabilities ``C[spatial]``; ``0`` where all are 0.

    Pixels whose probabilities are all zero were not predicted (e.g. a sampled subset) and stay ``0``.
    Returns a numpy array of the smallest fitting dtype (uint8 below 255 classes, else uint16).
    """
    p = convert_to_numpy(probs)
    return labels_from_probabilities(p, dim=0).astype(np.uint8 if p.shape[0] < 255 else np.uint16)


def _write_tiff(path: Path, array: np.ndarray, channel_axis: bool) -> None:
    import tifffile

    spatial = array.ndim - int(channel_axis)
    if channel_axis and spatial == 3:  # C, Z, Y, X -> ImageJ's Z, C, Y, X
        array, axes = np.moveaxis(array, 0, 1), "ZCYX"
    else:
        axes = ("C" if channel_axis else "") + "ZYX"[3 - spatial :]
    tifffile.imwrite(path, np.ascontiguousarray(array), imagej=True, metadata={"axes": axes})


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None, channel_axis: bool) -> None:
    import nibabel as nib

    if channel_axis:  # channels last: 4th dimension of a volume (as MONAI's NibabelWriter), 3rd of an image
        array = np.moveaxis(array, 0, -1)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))


class SaveSegmentationd(MapTransform):
    """Save a label map (ids ``1..C``) per input, NIfTI (affine kept) for NIfTI inputs and TIFF otherwise.

    The prediction under ``keys`` holds channel-first class probabilities ``C[spatial]``; the label map is
    their argmax + 1, written to ``output_dir/<input name>.<nii.gz|tif>``; with ``save_probabilities``
    the probabilities go to ``<input name>_prob.<ext>`` (float32, channels last in NIfTI, ImageJ ``C`` axis
    in TIFF); with ``save_uncertainty`` the normalised entropy of the probabilities (0 = certain, 1 =
    uniform) goes to ``<input name>_entropy.<ext>``; with ``save_overlay`` a 2D input also gets
    ``<input name>_overlay.png``, the class colours over the image (see :func:`label_overlay`). A file is
    never written over the input image itself, and an existing file (an earlier prediction, or a user's label
    map of the same name) only with ``overwrite=True``. :meth:`check_outputs` makes the same checks for all
    inputs before anything is predicted, and also refuses an output folder that is the input images' folder
    or the ``labels`` folder beside it (the bundle's dataset layout), so that a run never replaces a user's
    annotations.

    Args:
        keys: keys of the probability maps.
        output_dir: folder for the outputs (created).
        image_key: key of the input image whose metadata gives the file name and affine.
        save_probabilities: also write the probabilities.
        save_uncertainty: also write the per-pixel entropy map.
        save_overlay: also write a PNG preview of 2D predictions (ignored for 3D).
        save_clicks: also write the click suggestions under ``clicks_key`` (:class:`SuggestClicksd`) as
            ``<input name>_clicks.csv``, a napari Points CSV.
        clicks_key: key of the click suggestions.
        overwrite: replace files that already exist in ``output_dir`` (default: refuse, naming the file).
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        image_key: str = "image",
        save_probabilities: bool = False,
        save_uncertainty: bool = False,
        save_overlay: bool = False,
        overwrite: bool = False,
        allow_missing_keys: bool = False,
        save_clicks: bool = False,
        clicks_key: str = "clicks",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.image_key = image_key
        self.save_probabilities = save_probabilities
        self.save_uncertainty = save_uncertainty
        self.save_overlay = save_overlay
        self.overwrite = overwrite
        self.save_clicks, self.clicks_key = save_clicks, clicks_key

    def output_paths(self, src: str | Path) -> list[Path]:
        """The files written for input ``src`` (the overlay PNG is written for 2D inputs only)."""
        src = str(src)
        ext = ".nii.gz" if is_nifti(src) else ".tif"
        postfixes = [("", ext)]
        if self.save_probabilities:
            postfixes.append(("_prob", ext))
        if self.save_uncertainty:
            postfixes.append(("_entropy", ext))
        if self.save_overlay:
            postfixes.append(("_overlay", ".png"))
        if self.save_clicks:
            postfixes.append(("_clicks", ".csv"))
        return [self.output_dir / f"{image_stem(src)}{postfix}{e}" for postfix, e in postfixes]

    def check_outputs(self, sources: Sequence[str | Path], input_dirs: Sequence[str | Path] = ()) -> None:
        """Refuse, before anything is predicted, an output folder where this run would lose a user's files.

        Args:
            sources: the input images' paths.
            input_dirs: folders the inputs come from (default: the sources' parents).

        Raises:
            FileExistsError: ``output_dir`` is an input folder or the ``labels`` folder beside one, two inputs
                would write the same file, or a file to write exists and ``overwrite`` is off; the message names
                the file and the fix.
        """
        out = self.output_dir.resolve()
        folders = {Path(d).resolve() for d in input_dirs} | {Path(s).resolve().parent for s in sources}
        for folder in sorted(folders):
            protected = {folder: "the folder of the input images", folder.parent / "labels": "their label folder"}
            if out in protected:
                raise FileExistsError(
                    f"--output_dir {self.output_dir} is {protected[out]}; predictions are never written there (they "
                    "would replace images or annotations). Choose another --output_dir."
                )
        seen: dict[Path, str] = {}
        for src in sources:
            for path in self.output_paths(src):
                if path in seen:
                    raise FileExistsError(
                        f"The inputs {seen[path]} and {src} would both be written to {path}; rename one of them."
                    )
                seen[path] = str(src)
                if path.exists() and not self.overwrite:
                    raise FileExistsError(
                        f"{path} already exists (an earlier prediction?); pass --overwrite true to replace it, or "
                        "choose another --output_dir."
                    )

    def _target(self, src: str, postfix: str, ext: str | None = None, written: set[Path] | None = None) -> Path:
        ext = ext or (".nii.gz" if is_nifti(src) else ".tif")
        path = self.output_dir / f"{image_stem(src)}{postfix}{ext}"
        if Path(src).exists() and path.exists() and path.resolve() == Path(src).resolve():
            raise FileExistsError(f"Refusing to overwrite the input image {src}; choose another --output_dir.")
        if path.exists() and not self.overwrite and path not in (written or set()):
            raise FileExistsError(
                f"{path} already exists (an earlier prediction?); pass --overwrite true to replace it, or choose "
                "another --output_dir."
            )
        return path

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d.get(self.image_key)
        meta = dict(getattr(image, "meta", {}) or {})
        src = meta.get("filename_or_obj")
        if not src:
            raise KeyError(f"{self.image_key!r} carries no file name (filename_or_obj); load it with LoadImaged.")
        affine = meta.get("original_affine", meta.get("affine"))
        affine = None if affine is None else convert_to_numpy(affine)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        written: set[Path] = set()  # several keys write maps of one name: the last key's is kept
        for key in self.key_iterator(d):
            probs = convert_to_numpy(d[key]).astype(np.float32)
            labels = probabilities_to_labels(probs)
            outputs = [("", labels, False)]
            if self.save_probabilities:
                outputs.append(("_prob", probs, True))
            if self.save_uncertainty:
                entropy = class_entropy(torch.as_tensor(probs[None]))[0, 0].numpy()
                outputs.append(("_entropy", entropy.astype(np.float32), False))
            if self.save_overlay and labels.ndim == 2 and image is not None:
                from PIL import Image

                path = self._target(str(src), "_overlay", ".png", written)
                Image.fromarray(label_overlay(image, labels)).save(path)
                written.add(path)
            if self.save_clicks and self.clicks_key in d:
                path = self._target(str(src), "_clicks", ".csv", written)
                write_clicks_csv(convert_to_numpy(d[self.clicks_key]), path)
                written.add(path)
            for postfix, array, channels in outputs:
                path = self._target(str(src), postfix, written=written)
                written.add(path)
                if is_nifti(src):
                    _write_nifti(path, array, affine, channels)
                else:
                    _write_tiff(path, array, channels)
        return d


SaveSegmentationD = SaveSegmentationDict = SaveSegmentationd
