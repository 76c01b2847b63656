"""KL divergence of the ladder VAE: analytic per level, the top level against the GMM component of the class."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from epsseg_monai.networks.blocks.gmm_prior import gaussian_kl, select_components
from epsseg_monai.utils import UNLABELLED

__all__ = ["GMMKLDivergenceLoss"]


class GMMKLDivergenceLoss(_Loss):
    """Per-level KL of the posteriors against their priors, averaged over latent elements.

    Lower levels: ``KL(q(z_l | x, z_>l) || p(z_l | z_>l))`` on every sample. Top level:
    ``KL(q(z_L | x) || N(m_y, v_y))`` against the GMM component of each labelled sample's class ``y``;
    unlabelled samples (label ``0``) are left out of the top term (it is 0 when no sample is labelled).

    Args:
        reduction: over the levels: ``"mean"`` (reference), ``"sum"``, or ``"none"`` (shape ``(L,)``).
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)

    def forward(
        self,
        mu: Sequence[torch.Tensor],
        logvar: Sequence[torch.Tensor],
        prior_mu: Sequence[torch.Tensor],
        prior_logvar: Sequence[torch.Tensor],
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            mu: posterior means per level, bottom to top, each BZH[WD].
            logvar: posterior log-variances, same shapes.
            prior_mu: prior means of the lower levels (same shapes as ``mu``) and, last, the GMM component
                means ``(C, Z)``.
            prior_logvar: the matching log-variances.
            labels: class ids ``1..C``, ``0`` = unlabelled, shape ``(B,)``.

        Raises:
            ValueError: on mismatched lengths or shapes, or labels above ``C``.
        """
        n = len(mu)
        if n == 0 or not (len(logvar) == len(prior_mu) == len(prior_logvar) == n):
            raise ValueError(
                f"mu, logvar, prior_mu and prior_logvar need one entry per level; got lengths "
                f"{len(mu)}, {len(logvar)}, {len(prior_mu)}, {len(prior_logvar)}."
            )
        for level in range(n):
            if mu[level].shape != logvar[level].shape:
                raise ValueError(
                    f"Level {level}: mu {tuple(mu[level].shape)} and logvar {tuple(logvar[level].shape)} differ."
                )
        for level in range(n - 1):
            if prior_mu[level].shape != mu[level].shape or prior_logvar[level].shape != mu[level].shape:
                raise ValueError(
                    f"Level {level}: prior shapes {tuple(prior_mu[level].shape)}/{tuple(prior_logvar[level].shape)} "
                    f"do not match the posterior {tuple(mu[level].shape)}."
                )
        top_mu, top_logvar = mu[-1], logvar[-1]
        gmm_mu, gmm_logvar = prior_mu[-1], prior_logvar[-1]
        if gmm_mu.ndim != 2 or gmm_mu.shape != gmm_logvar.shape or gmm_mu.shape[1] != top_mu.shape[1]:
            raise ValueError(
                f"The top prior must be GMM parameters (C, Z) with Z={top_mu.shape[1]}, got "
                f"{tuple(gmm_mu.shape)} and {tuple(gmm_logvar.shape)}."
            )
        if labels.ndim != 1 or labels.shape[0] != top_mu.shape[0]:
            raise ValueError(f"labels must have shape ({top_mu.shape[0]},), got {tuple(labels.shape)}.")
        if labels.numel() and (labels.min() < 0 or labels.max() > gmm_mu.shape[0]):
            raise ValueError(f"labels must be in 0..{gmm_mu.shape[0]} (0 = unlabelled), got {labels.tolist()}.")

        kls = [gaussian_kl(mu[i], logvar[i], prior_mu[i], prior_logvar[i]).mean() for i in range(n - 1)]
        labelled = labels != UNLABELLED
        if bool(labelled.any()):
            comp_mu, comp_logvar = select_components(gmm_mu, gmm_logvar, labels[labelled], top_mu.ndim - 2)
            kls.append(gaussian_kl(top_mu[labelled], top_logvar[labelled], comp_mu, comp_logvar).mean())
        else:
            kls.append(top_mu.sum() * 0.0)
        per_level = torch.stack(kls)
        if self.reduction == LossReduction.MEAN.value:
            return per_level.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_level.sum()
        return per_level
