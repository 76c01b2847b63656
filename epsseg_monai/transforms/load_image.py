"""Load microscopy images (TIFF, PNG, NIfTI) channel-first, with errors that name the broken file."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import LoadImage, LoadImaged

from ..data.image_io import MicroscopyImageReader

__all__ = ["LoadMicroscopyImage", "LoadMicroscopyImageD", "LoadMicroscopyImageDict", "LoadMicroscopyImaged"]


class LoadMicroscopyImage(LoadImage):
    """``monai.transforms.LoadImage`` with :class:`~epsseg_monai.data.MicroscopyImageReader` as runtime reader.

    MONAI's loader tries every registered reader and replaces their errors by "cannot find a suitable
    reader"; here the reader is chosen by suffix and its ``ValueError`` (file name and cause) reaches the
    user. Defaults: ``image_only=True``, ``ensure_channel_first=True``.

    Args:
        image_only: return only the image MetaTensor.
        ensure_channel_first: move or add the channel axis first.
        kwargs: other arguments of ``LoadImage``.
    """

    def __init__(self, image_only: bool = True, ensure_channel_first: bool = True, **kwargs: Any) -> None:
        self.microscopy_reader = MicroscopyImageReader()
        super().__init__(
            reader=self.microscopy_reader, image_only=image_only, ensure_channel_first=ensure_channel_first, **kwargs
        )

    def __call__(self, filename: Any, reader: ImageReader | None = None) -> Any:
        return super().__call__(filename, reader or self.microscopy_reader)


class LoadMicroscopyImaged(LoadImaged):
    """Dictionary version of :class:`LoadMicroscopyImage`.

    Args:
        keys: keys of the file names to load.
        image_only: return only the image MetaTensors.
        ensure_channel_first: move or add the channel axis first.
        kwargs: other arguments of ``LoadImaged``.
    """

    def __init__(
        self, keys: KeysCollection, image_only: bool = True, ensure_channel_first: bool = True, **kwargs: Any
    ) -> None:
        self.microscopy_reader = MicroscopyImageReader()
        super().__init__(
            keys,
            reader=self.microscopy_reader,
            image_only=image_only,
            ensure_channel_first=ensure_channel_first,
            **kwargs,
        )

    def __call__(self, data: Mapping[Hashable, Any], reader: ImageReader | None = None) -> dict[Hashable, Any]:
        return super().__call__(data, reader or self.microscopy_reader)


LoadMicroscopyImageD = LoadMicroscopyImageDict = LoadMicroscopyImaged
