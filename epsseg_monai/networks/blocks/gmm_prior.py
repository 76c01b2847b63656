"""Gaussian-mixture prior on the top latent level: one Gaussian component per class."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GMMPrior", "gaussian_kl", "select_components"]


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """Element-wise analytic ``KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p)))`` (broadcasting)."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1.0)


def select_components(
    means: torch.Tensor, logvars: torch.Tensor, labels: torch.Tensor, spatial_dims: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameters of the component of each sample's class, shaped to broadcast over a latent map.

    Args:
        means: component means, shape ``(C, Z)``.
        logvars: component log-variances, shape ``(C, Z)``.
        labels: class ids ``1..C``, shape ``(B,)``.
        spatial_dims: number of spatial dimensions of the latent map.

    Returns:
        ``(mu, logvar)``, each of shape ``(B, Z, 1, ...)`` with ``spatial_dims`` trailing ones.
    """
    num_classes = means.shape[0]
    labels = labels.long()
    if labels.numel() and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(
            f"labels must be class ids 1..{num_classes} here, got values in [{int(labels.min())}, {int(labels.max())}]."
        )
    shape = (labels.shape[0], means.shape[1]) + (1,) * spatial_dims
    return means[labels - 1].reshape(shape), logvars[labels - 1].reshape(shape)


class GMMPrior(nn.Module):
    """Gaussian-mixture prior ``p(z_L) = sum_k pi_k N(m_k, diag(v_k))`` with one component per class.

    Component ``k`` (class id ``k + 1``) has mean ``mu_init`` on its own block of ``latent_channels // C``
    channels and 0 elsewhere, and unit variance; the same at every spatial position. The KL term of a
    labelled sample is taken against the component of its class.

    Args:
        num_classes: number of classes ``C`` (= components).
        latent_channels: channels ``Z`` of the top latent level; at least ``C``.
        mu_init: value of the component means on their own channel block (5.0 in the reference code).
        learnable: learn means and log-variances instead of keeping them fixed.
    """

    def __init__(self, num_classes: int, latent_channels: int, mu_init: float = 5.0, learnable: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if latent_channels < num_classes:
            raise ValueError(
                f"latent_channels ({latent_channels}) must be >= num_classes ({num_classes}) so that each "
                "component has its own channel block."
            )
        self.num_classes = num_classes
        self.latent_channels = latent_channels
        block = latent_channels // num_classes
        means = torch.zeros(num_classes, latent_channels)
        for k in range(num_classes):
            means[k, k * block : (k + 1) * block] = mu_init
        logvars = torch.zeros(num_classes, latent_channels)
        if learnable:
            self.means = nn.Parameter(means)
            self.logvars = nn.Parameter(logvars)
        else:
            self.register_buffer("means", means)
            self.register_buffer("logvars", logvars)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the component means and log-variances, each of shape ``(C, Z)``."""
        return self.means, self.logvars

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean KL of each posterior ``N(mu, exp(logvar))`` against the component of its class.

        Args:
            mu: posterior means of the top level, shape ``BZ[spatial]``.
            logvar: posterior log-variances, same shape.
            labels: class ids ``1..C``, shape ``(B,)``.

        Returns:
            Per-sample KL averaged over latent elements, shape ``(B,)``.
        """
        if mu.shape != logvar.shape or mu.ndim < 2 or mu.shape[1] != self.latent_channels:
            raise ValueError(
                f"mu and logvar must both be BZ[spatial] with Z={self.latent_channels}, got {tuple(mu.shape)} "
                f"and {tuple(logvar.shape)}."
            )
        if labels.shape != (mu.shape[0],):
            raise ValueError(f"labels must have shape ({mu.shape[0]},), got {tuple(labels.shape)}.")
        m, lv = select_components(self.means, self.logvars, labels, mu.ndim - 2)
        return gaussian_kl(mu, logvar, m, lv).flatten(1).mean(1)
