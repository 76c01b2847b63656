"""Self-training (ε-Seg+): dense pseudo-labels of the training images from a trained network's confident pixels."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from epsseg_monai.utils import UNLABELLED, check_sparse_labels

__all__ = [
    "DensePseudoLabels",
    "DensePseudoLabelsD",
    "DensePseudoLabelsDict",
    "DensePseudoLabelsd",
]


class DensePseudoLabels(Transform):
    """A pseudo-label map of one image: the predicted class where the network is confident, the clicks where given.

    The network predicts every pixel of the (normalised) image with ``inferer`` (a
    :class:`~epsseg_monai.inferers.DenseInferer`: a few seconds per megapixel); pixels whose top class probability
    is at least ``threshold`` get that class, the others ``0`` (unlabelled). The user's sparse labels, when given,
    replace the prediction at their pixels. The map is a label map like the clicks (``0`` = unlabelled,
    ``1..C``), so the dense cross-entropy of ε-Seg+ trains on every pseudo-labelled pixel of a crop.

    This is ε-Seg+'s second phase (self-training on the network's own dense predictions), an alternative to the
    paper's semi-supervised phase (pseudo-labels of a few neighbour patches per click, from latent distances).

    Args:
        network: the trained network (its mode is restored after the call).
        inferer: called as ``inferer(image[None], network)``, returning ``(1, C, *spatial)`` probabilities.
        threshold: minimum top-class probability of a pseudo-labelled pixel, in ``[0, 1]``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, network: torch.nn.Module, inferer: Any, threshold: float = 0.9) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
        self.network = network
        self.inferer = inferer
        self.threshold = float(threshold)

    def __call__(self, img: NdarrayOrTensor, label: NdarrayOrTensor | None = None) -> NdarrayOrTensor:
        """Pseudo-label map ``1[spatial]`` (the type of ``img``, int64 values) of a channel-first image.

        Args:
            img: normalised image ``C[spatial]``.
            label: optional sparse labels ``1[spatial]`` (``0`` = unlabelled) that override the prediction.
        """
        image = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        device = next(self.network.parameters()).device
        with torch.no_grad():
            probs = self.inferer(image[None].to(device), self.network)[0]
        confidence, cls = probs.max(0)
        pseudo = torch.where(confidence >= self.threshold, cls + 1, torch.full_like(cls, UNLABELLED)).cpu()[None]
        if label is not None:
            clicks = convert_to_tensor(label, track_meta=False).to(torch.int64)
            if tuple(clicks.shape) != tuple(pseudo.shape):
                raise ValueError(
                    f"The sparse label map {tuple(clicks.shape)} must be 1[spatial] of the image {tuple(image.shape)}."
                )
            check_sparse_labels(clicks, probs.shape[0], name="sparse label map")
            pseudo = torch.where(clicks != UNLABELLED, clicks, pseudo)
        return convert_to_dst_type(pseudo.to(torch.int64), img, dtype=torch.int64)[0]


class DensePseudoLabelsd(MapTransform):
    """Dictionary version of :class:`DensePseudoLabels`: writes the pseudo-label map of ``keys`` to ``pseudo_key``.

    Args:
        keys: the image key (one).
        network: the trained network.
        inferer: a dense inferer (see :class:`DensePseudoLabels`).
        threshold: minimum top-class probability of a pseudo-labelled pixel.
        label_key: sparse labels that override the prediction, or ``None``.
        pseudo_key: output key of the pseudo-label map.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = DensePseudoLabels.backend

    def __init__(
        self,
        keys: KeysCollection,
        network: torch.nn.Module,
        inferer: Any,
        threshold: float = 0.9,
        label_key: str | None = "label",
        pseudo_key: str = "pseudo",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.labeller = DensePseudoLabels(network, inferer, threshold)
        self.label_key = label_key
        self.pseudo_key = pseudo_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d.get(self.label_key) if self.label_key is not None else None
            d[self.pseudo_key] = self.labeller(d[key], label)
        return d


DensePseudoLabelsD = DensePseudoLabelsDict = DensePseudoLabelsd
