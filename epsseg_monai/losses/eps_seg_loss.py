"""The ε-Seg objective: inpainting + KL (GMM top prior) + sparse contrastive + cross-entropy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from epsseg_monai.losses.contrastive_loss import SparseContrastiveLoss
from epsseg_monai.losses.dense_ce_loss import DenseSparseCrossEntropyLoss
from epsseg_monai.losses.inpainting_loss import InpaintingLoss
from epsseg_monai.losses.kl_loss import GMMKLDivergenceLoss
from epsseg_monai.losses.pseudo_labels import PseudoLabeller
from epsseg_monai.utils import UNLABELLED

__all__ = ["EpsSegLoss", "EpsSegTrainerLoss", "SemiSupervisedEpsSegLoss", "sparse_cross_entropy"]

#: Keys of the dictionary returned by :class:`EpsSegLoss`.
TERMS = ("loss", "inpainting", "kl", "contrastive", "ce")


def sparse_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean", weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of class logits ``(B, C)`` against ids ``1..C``; samples labelled ``0`` are ignored.

    With ``"mean"`` the loss is averaged over labelled samples (0 when there are none); ``"none"`` gives
    ``(B,)`` with 0 for unlabelled samples.
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"Expected logits (B, C) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}."
        )
    if labels.numel() and (labels.min() < 0 or labels.max() > logits.shape[1]):
        raise ValueError(f"labels must be in 0..{logits.shape[1]} (0 = unlabelled), got {labels.tolist()}.")
    per_sample = F.cross_entropy(
        logits, labels.long() - 1, weight=weight, ignore_index=UNLABELLED - 1, reduction="none"
    )
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    labelled = labels != UNLABELLED
    if weight is None:
        norm = labelled.sum().to(per_sample.dtype)
    else:
        norm = weight.to(per_sample.dtype)[labels.long()[labelled] - 1].sum()
    return per_sample.sum() / norm.clamp(min=1e-12) if bool(labelled.any()) else per_sample.sum()


class EpsSegLoss(_Loss):
    """``alpha * inpainting + beta * KL + gamma * contrastive + ce_weight * CE`` on the network's training output.

    ε-Seg+ adds ``dense_ce_weight * dense CE``: the cross-entropy at every labelled pixel of unmasked crops
    (:class:`DenseSparseCrossEntropyLoss` on the network's ``dense_logits``/``dense_labels``), when the network
    got crops (``EpsSegHVAE.forward_train(..., dense_inputs=...)``).

    Args:
        alpha: weight of :class:`InpaintingLoss` (1).
        beta: weight of :class:`GMMKLDivergenceLoss` (0.01, reference).
        gamma: weight of :class:`SparseContrastiveLoss` (0.1, reference).
        ce_weight: weight of the cross-entropy of the head (1).
        mask_size: side of the masked centre region (for the inpainting loss).
        margin: contrastive margin (20, reference).
        level_weights: contrastive level weights (bottom to top), default ``1/4, 1/2, 1`` for 3 levels.
        class_weights: optional per-class weights of the cross-entropy, length ``C``.
        reduction: batch reduction of the inpainting and cross-entropy terms, ``"mean"`` or ``"sum"``.
        dense_ce_weight: weight of the dense cross-entropy on crops (0: not computed, the paper's objective).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.01,
        gamma: float = 0.1,
        ce_weight: float = 1.0,
        mask_size: int = 1,
        margin: float = 20.0,
        level_weights: Sequence[float] | None = None,
        class_weights: Sequence[float] | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
        dense_ce_weight: float = 0.0,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if self.reduction == LossReduction.NONE.value:
            raise ValueError("EpsSegLoss combines terms into a scalar; use reduction 'mean' or 'sum'.")
        self.alpha, self.beta, self.gamma, self.ce_weight = alpha, beta, gamma, ce_weight
        self.inpainting = InpaintingLoss(mask_size=mask_size, reduction=self.reduction)
        self.kl = GMMKLDivergenceLoss(reduction="mean")
        self.contrastive = SparseContrastiveLoss(margin=margin, level_weights=level_weights)
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.dense_ce_weight = dense_ce_weight
        self.dense_ce = DenseSparseCrossEntropyLoss(reduction=self.reduction, class_weights=self.class_weights)

    def forward(
        self,
        outputs: Mapping[str, torch.Tensor | Sequence[torch.Tensor]],
        target: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            outputs: the dict of :meth:`EpsSegHVAE.forward_train` (``logits``, ``reconstruction``, ``mu``,
                ``logvar``, ``prior_mu``, ``prior_logvar``).
            target: the unmasked image patches (the reconstruction is their shape or a centre crop of it).
            labels: class id ``1..C`` of each patch's centre, ``0`` = unlabelled, shape ``(B,)``.
            mask: optional inpainting region (default: centre of side ``mask_size``).

        Returns:
            dict with the total ``"loss"`` (to back-propagate) and each unweighted term (``"inpainting"``,
            ``"kl"``, ``"contrastive"``, ``"ce"``, and with crops ``"dense_ce"`` and ``"dense_pixels"``, the number
            of labelled crop pixels it averages over) for logging.
        """
        missing = [
            k for k in ("logits", "reconstruction", "mu", "logvar", "prior_mu", "prior_logvar") if k not in outputs
        ]
        if missing:
            raise ValueError(f"outputs lacks {missing}; pass the dict of EpsSegHVAE in training mode (forward_train).")
        labels = labels.reshape(-1).to(device=target.device)
        inpainting = self.inpainting(outputs["reconstruction"], target, mask)
        kl = self.kl(outputs["mu"], outputs["logvar"], outputs["prior_mu"], outputs["prior_logvar"], labels)
        contrastive = self.contrastive(outputs["mu"], labels)
        weight = None if self.class_weights is None else self.class_weights.to(target.device)
        ce = sparse_cross_entropy(outputs["logits"], labels, reduction=self.reduction, weight=weight)
        total = self.alpha * inpainting + self.beta * kl + self.gamma * contrastive + self.ce_weight * ce
        terms = dict(zip(TERMS, (total, inpainting, kl, contrastive, ce)))
        if self.dense_ce_weight and "dense_logits" in outputs:
            dense_ce = self.dense_ce(outputs["dense_logits"], outputs["dense_labels"])
            terms["dense_ce"] = dense_ce
            terms["dense_pixels"] = (outputs["dense_labels"] > 0).sum().to(dense_ce.dtype)  # labelled pixels learned
            terms["loss"] = total + self.dense_ce_weight * dense_ce
        return terms


class EpsSegTrainerLoss(EpsSegLoss):
    """:class:`EpsSegLoss` with the interface of ``monai.engines.SupervisedTrainer``'s ``loss_function``.

    The trainer calls ``loss_function(pred, targets)`` and needs a tensor back; here ``pred`` is the
    network's training dict and ``targets`` the dict made by
    :class:`~epsseg_monai.engines.PrepareEpsSegBatch` (``"target"``: unmasked patches, ``"label"``: centre
    classes, optional ``"mask"``). The total loss is returned; the detached terms of the last call stay in
    :attr:`terms` for :class:`~epsseg_monai.handlers.LossTermsHandler`. Arguments as :class:`EpsSegLoss`.
    """

    terms: dict[str, torch.Tensor]

    @staticmethod
    def _check_targets(targets: Mapping[str, torch.Tensor]) -> None:
        missing = [k for k in ("target", "label") if k not in targets]
        if missing:
            raise ValueError(f"targets lacks {missing}; prepare batches with epsseg_monai.engines.PrepareEpsSegBatch.")

    def forward(  # type: ignore[override]
        self, outputs: Mapping[str, torch.Tensor | Sequence[torch.Tensor]], targets: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        self._check_targets(targets)
        terms = super().forward(outputs, targets["target"], targets["label"], targets.get("mask"))
        self.terms = {k: v.detach() for k, v in terms.items()}
        return terms["loss"]


class SemiSupervisedEpsSegLoss(EpsSegTrainerLoss):
    """:class:`EpsSegTrainerLoss` for ε-Seg's semi-supervised phase: unlabelled neighbours get pseudo-labels.

    Batches hold labelled anchor patches and unlabelled (label ``0``) neighbour patches, e.g. from
    :class:`~epsseg_monai.transforms.RandNeighbourPatchd`. Each call first gives the neighbours pseudo-labels
    with :attr:`pseudo_labeller` (:class:`~epsseg_monai.losses.PseudoLabeller`: nearest class mean of the
    batch's anchors in the flattened top-level posterior means, softmax over ``-d**2 / temperature``, kept
    when the probability is ``>= threshold``; no gradient flows through them). Anchors keep their true
    labels. As in the reference code, pseudo-labelled neighbours then count as labelled in the contrastive
    loss, the cross-entropy and the top-level KL (against their pseudo-class's GMM component), while the
    inpainting loss and the lower-level KL use every patch, pseudo-labelled or not.

    :attr:`terms` also holds ``"pseudo_fraction"``, the fraction of unlabelled patches that got a pseudo-label,
    so :class:`~epsseg_monai.handlers.LossTermsHandler` logs it (``train_pseudo_fraction``).

    Args:
        pseudo_threshold: initial confidence threshold (0.5 in ε-Seg; raised by
            :class:`~epsseg_monai.handlers.SemiSupervisedScheduleHandler`).
        pseudo_temperature: divides the squared distances (200 in ε-Seg).
        kwargs: the arguments of :class:`EpsSegLoss`.
    """

    def __init__(self, pseudo_threshold: float = 0.5, pseudo_temperature: float = 200.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pseudo_labeller = PseudoLabeller(pseudo_threshold, pseudo_temperature)

    @property
    def threshold(self) -> float:
        """The pseudo-labeller's confidence threshold (settable)."""
        return self.pseudo_labeller.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.pseudo_labeller.threshold = float(value)

    def forward(  # type: ignore[override]
        self, outputs: Mapping[str, torch.Tensor | Sequence[torch.Tensor]], targets: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        self._check_targets(targets)
        if "mu" not in outputs:
            raise ValueError("outputs lacks 'mu'; pass the dict of EpsSegHVAE in training mode (forward_train).")
        labels = targets["label"].reshape(-1)
        pseudo = self.pseudo_labeller(outputs["mu"][-1], labels)  # type: ignore[index]
        terms = EpsSegLoss.forward(self, outputs, targets["target"], pseudo, targets.get("mask"))
        terms["pseudo_fraction"] = torch.tensor(self.pseudo_labeller.fraction, device=terms["loss"].device)
        self.terms = {k: v.detach() for k, v in terms.items()}
        return terms["loss"]
