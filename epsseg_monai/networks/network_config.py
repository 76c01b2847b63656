"""One source for the model: the network's constructor arguments and class names, written next to the weights.

Training writes ``models/network.json``; inference, evaluation and export rebuild the network from it, so a
network size is given once (the training preset) and never restated at prediction time::

    {"network": {"spatial_dims": 2, "num_filters": 32, ...}, "class_names": ["cytoplasm", ...]}

For a bundle without trained weights (model zoo checks, a fresh clone) the shipped ``train.json``'s default
network stands in (:func:`load_network_config`'s ``fallback_config``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["NETWORK_FILE", "load_network_config", "save_network_config"]

#: file name of the network description, next to ``model.pt``
NETWORK_FILE = "network.json"


def save_network_config(
    network_args: Mapping[str, Any], class_names: Sequence[str], path: str | os.PathLike
) -> dict[str, Any]:
    """Write the network's constructor arguments and class names as JSON (creating the folder), atomically.

    Args:
        network_args: keyword arguments of :class:`~epsseg_monai.networks.EpsSegHVAE`.
        class_names: one name per class, ``len == num_classes``.
        path: the file to write (``models/network.json``).

    Returns:
        The written description, so a bundle config can chain it.

    Raises:
        ValueError: when the class names do not match ``num_classes``.
    """
    args = {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in dict(network_args).items()}
    names = [str(n) for n in class_names]
    if "num_classes" in args and len(names) != int(args["num_classes"]):
        raise ValueError(
            f"{len(names)} class names {names} for num_classes={args['num_classes']}; pass one name per class "
            "(--class_names) or set --num_classes."
        )
    config = {"network": args, "class_names": names}
    from ..utils import write_text_atomic

    write_text_atomic(path, json.dumps(config, indent=2) + "\n")  # under torchrun rank 0 writes it
    return config


def load_network_config(
    path: str | os.PathLike, fallback_config: str | os.PathLike | None = None, network_id: str = "network_args"
) -> dict[str, Any]:
    """Read the description written by training; without one, the default network of a training config.

    Args:
        path: ``network.json`` next to the checkpoint.
        fallback_config: a training config (``configs/train.json``) whose ``network_id`` and ``class_names``
            describe the network when ``path`` does not exist (an untrained bundle, or weights trained before
            this file existed); a warning says so.
        network_id: the config id of the network's constructor arguments.

    Returns:
        ``{"network": {...constructor arguments...}, "class_names": [...]}``.

    Raises:
        FileNotFoundError: when neither file exists; ValueError: when ``path`` is not a network description.
    """
    path = Path(path)
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); restore it from the training run or retrain.") from e
        if not isinstance(config, dict) or not isinstance(config.get("network"), dict):
            raise ValueError(f"{path} must hold {{'network': {{...}}, 'class_names': [...]}}; restore it or retrain.")
        return config
    if fallback_config is None or not Path(fallback_config).is_file():
        raise FileNotFoundError(
            f"{path} is missing: training writes it next to model.pt (the network's sizes and class names). Copy it "
            "along with the weights, or point --checkpoint at the model.pt of a training run."
        )
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.fspath(fallback_config))
    args = parser.get_parsed_content(network_id)
    names = parser.get_parsed_content("class_names")
    warnings.warn(
        f"{path} not found: using the default network of {fallback_config}. Weights trained with other sizes are "
        "refused; predict with the model.pt of a training run, whose network.json lies beside it.",
        stacklevel=2,
    )
    return {"network": dict(args), "class_names": list(names)}
