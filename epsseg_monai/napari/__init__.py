"""napari plugin of ε-Seg (the ``[napari]`` extra): train on painted clicks, predict, suggest where to click next.

* :mod:`epsseg_monai.napari.session` — :class:`InteractiveSession`, the loop without Qt (train a round on an
  image and its clicks through the bundle, predict, suggest clicks); usable from scripts and notebooks too.
* :mod:`epsseg_monai.napari.widget` — :class:`EpsSegWidget`, the dock widget (npe2 manifest ``napari.yaml``,
  menu *Plugins > ε-Seg*). Imported lazily, so this package imports without Qt.
"""

from __future__ import annotations

from typing import Any

from .session import InteractiveSession, Prediction, TrainingProgress, default_bundle_root

__all__ = ["EpsSegWidget", "InteractiveSession", "Prediction", "TrainingProgress", "default_bundle_root"]


def __getattr__(name: str) -> Any:
    if name == "EpsSegWidget":
        from .widget import EpsSegWidget

        return EpsSegWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
