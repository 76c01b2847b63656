"""The ε-Seg hierarchical (ladder) VAE with a Gaussian-mixture top prior and a segmentation head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Act, Conv
from torch import nn

from epsseg_monai.networks.blocks.blur_pool import BlurPool
from epsseg_monai.networks.blocks.gmm_prior import GMMPrior
from epsseg_monai.networks.blocks.receptive_field import receptive_field_radius
from epsseg_monai.networks.blocks.residual import GatedResidualBlock
from epsseg_monai.networks.blocks.segmentation_decoder import SegmentationDecoder
from epsseg_monai.networks.blocks.segmentation_head import SegmentationHead
from epsseg_monai.networks.nets.phase_tree import PhaseTree
from epsseg_monai.utils import center_index

__all__ = ["EpsSegHVAE"]

#: Log-variances of every posterior and learned prior are clamped to this range (reference code).
LOGVAR_RANGE = (-10.0, 10.0)
#: Per-level entries of the training output, each a list from the bottom level to the top.
LEVEL_KEYS = ("mu", "logvar", "z", "prior_mu", "prior_logvar")


class _Gaussian(nn.Module):
    """A 3x3 convolution giving the mean and the clamped log-variance of a diagonal Gaussian."""

    def __init__(self, spatial_dims: int, in_channels: int, latent_channels: int) -> None:
        super().__init__()
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, 2 * latent_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = torch.chunk(self.conv(x), 2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


def pad_border(x: torch.Tensor, pads: Sequence[Sequence[int]], mode: str) -> torch.Tensor:
    """Pad the spatial axes of ``x`` ``(B, C, *spatial)`` by ``pads`` (``(before, after)`` per axis).

    ``reflect`` falls back to ``replicate`` where an axis is too short to reflect by its padding (torch cannot
    reflect by more than the image side); the dense pass and :class:`~epsseg_monai.inferers.DenseSlidingWindowInferer`
    pad alike through this function.
    """
    if mode == "reflect" and any(max(p) >= s for p, s in zip(pads, x.shape[2:])):
        mode = "replicate"
    flat = [int(v) for p in reversed(list(pads)) for v in p]
    return F.pad(x, flat, mode=mode) if any(flat) else x


class EpsSegHVAE(nn.Module):
    """Ladder VAE of ε-Seg (arXiv 2510.18637) for 2D or 3D patches, as a MONAI network.

    Bottom-up path: 5x5 conv, ELU, ``stem_blocks`` (one) gated residual blocks, then per level a 3x3 conv,
    blur-pool (x1/2) and ``num_blocks`` gated residual blocks; latent maps are ``patch/2, patch/4, ...``.
    Top-down path: the top level's posterior ``q(z_L|x)`` comes from the top bottom-up features and its prior is a
    :class:`GMMPrior`; each lower level gets a prior ``p(z_l|z_>l)`` from the top-down features and a
    posterior ``q(z_l|x, z_>l)`` from the merge of top-down and bottom-up features (analytic KL). The
    decoder ends at full resolution with a 3x3 conv to the image channels (mean of a fixed-variance Gaussian
    likelihood). The :class:`SegmentationHead` reads the centre window of the top-level posterior means; with
    ``head_fine_levels`` (ε-Seg+) it also reads the finer levels' bottom-up features at the centre pixel.
    With ``reconstruct_center`` the last top-down level and the decoder run only on the centre of the patch
    that the inpainting loss reads (plus their receptive margin), see :meth:`reconstruction_size`.

    In training mode ``forward`` returns a dict with everything :class:`~epsseg_monai.losses.EpsSegLoss`
    needs; in eval mode it returns the class logits ``(B, C)`` of each patch's centre pixel as a plain
    tensor (only the bottom-up path, the top posterior and the head run), so ``torch.jit.trace`` and
    ``monai.bundle verify_net_in_out`` work. :meth:`forward_train` returns the dict in either mode (for
    validation losses without dropout or sampling). :meth:`forward_dense` gives the logits of every pixel of a
    whole image (or crop) at once, exactly those of the patch centred on each pixel (:class:`PhaseTree`).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: image channels.
        num_classes: number of classes ``C`` (= GMM components, = head outputs).
        num_levels: number of latent levels (3 in the reference).
        num_filters: channels of the deterministic features (64).
        num_blocks: gated residual blocks per level, bottom-up and top-down (5).
        latent_channels: channels ``Z`` of every latent level (32).
        patch_size: side of the training patches (64); must be divisible by ``2**num_levels``.
        dropout: dropout probability in the residual blocks (0.2).
        head_window: side of the centre window of the top latent map read by the head (8).
        head_hidden: hidden width of the head (32).
        mu_init: value of the GMM component means on their channel block (5.0).
        learnable_prior: learn the GMM component means and variances.
        num_final_blocks: residual blocks at full resolution before the output conv (default: ``num_blocks``).
        stem_blocks: gated residual blocks of the stem after its 5x5 convolution (1 in the reference). They run at
            full resolution on every training patch, the dearest part of a step on a CPU; ``0`` (ε-Seg+'s cheaper
            stem, not in the paper) keeps the 5x5 convolution and its activation only, so the first bottom-up level
            and the fine-detail head's level ``0`` read the 5x5 filter bank directly.
        act: activation of the residual blocks (ELU).
        norm: normalisation of the residual blocks (batch norm) or ``None``.
        reconstruct_center: side of the centre region whose reconstruction is needed (the inpainting mask's
            ``mask_size``), or ``None`` to reconstruct the whole patch (the reference). The inpainting loss reads
            only that region, so computing the full-resolution decoder elsewhere is wasted: with a value the
            last top-down level and the decoder run on the centre ``reconstruction_size`` region (the region
            plus the decoder's receptive margin) and ``reconstruction`` is that centre crop. In eval mode its
            centre ``reconstruct_center`` region equals the full reconstruction's; in training mode batch norm
            then takes its statistics from the cropped region. Latents, KL, contrastive loss and head are
            unchanged.
        head_fine_levels: the fine-detail head of ε-Seg+ (not in the paper): levels whose bottom-up features at
            the centre pixel the head reads besides the top latent window; ``0`` is the stem (full resolution),
            ``l`` the output of bottom-up level ``l`` (resolution ``1/2**l``, ``num_levels`` the top one). Empty
            (default): the reference head. ``patch_size // 2`` must be a multiple of ``2**max(head_fine_levels)``.
        dense_training: how :meth:`dense_training_pass` (ε-Seg+'s dense cross-entropy on crops) computes the crops'
            logits: ``"phase_tree"`` (:meth:`forward_dense` with a mask of the labelled pixels, skipping sub-grids
            without one) or ``"atrous"`` (:class:`~epsseg_monai.networks.DensePredictor` sharing these weights:
            every pixel, dilated convolutions at full resolution, batch norm over the whole crops). The same
            function of the weights; they differ in speed and in the batch-norm statistics of a training pass.
        segmentation_decoder: ε-Seg+'s segmentation decoder (not in the paper): a
            :class:`~epsseg_monai.networks.blocks.SegmentationDecoder` upsamples the top posterior means to full
            resolution with skip connections from the bottom-up features and gives the logits of every pixel;
            prediction (:meth:`classify`, :meth:`forward_dense`) and the dense cross-entropy on crops use it, while
            the centre-pixel head still gets its per-patch cross-entropy (an auxiliary term). The dense pass is then
            a plain fully convolutional pass (no phase tree): the image is padded by ``decoder_context`` pixels
            and, where needed, to a multiple of ``2**num_levels``. Tiles of the sliding-window inferers agree with
            the whole-image pass only approximately: the decoder's receptive field is larger than
            ``decoder_context``, and the blur-pool phases depend on a tile's offset modulo ``2**num_levels``.
            ``dense_training`` does not apply (the crops' logits are the decoder's).
        decoder_blocks: gated residual blocks after each fusion of the segmentation decoder.
        decoder_context: pixels of (reflected) context the dense pass of the segmentation decoder pads the image
            by, and the margin a valid pass drops (default ``patch_size // 2``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        num_levels: int = 3,
        num_filters: int = 64,
        num_blocks: int = 5,
        latent_channels: int = 32,
        patch_size: int = 64,
        dropout: float = 0.2,
        head_window: int = 8,
        head_hidden: int = 32,
        mu_init: float = 5.0,
        learnable_prior: bool = False,
        num_final_blocks: int | None = None,
        stem_blocks: int = 1,
        act: str = "elu",
        norm: str | None = "batch",
        reconstruct_center: int | None = None,
        head_fine_levels: Sequence[int] = (),
        dense_training: str = "phase_tree",
        segmentation_decoder: bool = False,
        decoder_blocks: int = 1,
        decoder_context: int | None = None,
    ) -> None:
        super().__init__()
        if dense_training not in ("phase_tree", "atrous"):
            raise ValueError(f"dense_training must be 'phase_tree' or 'atrous', got {dense_training!r}.")
        self.dense_training = dense_training
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}.")
        factor = 2**num_levels
        if patch_size % factor != 0:
            raise ValueError(f"patch_size {patch_size} must be divisible by 2**num_levels = {factor}.")
        if patch_size // factor < head_window:
            raise ValueError(
                f"The top latent map of a {patch_size} px patch is {patch_size // factor} px, smaller than "
                f"head_window={head_window}; use a larger patch, fewer levels or a smaller window."
            )
        if reconstruct_center is not None and not 1 <= reconstruct_center <= patch_size:
            raise ValueError(
                f"reconstruct_center must be None or in [1, patch_size={patch_size}], got {reconstruct_center}."
            )
        fine_levels = tuple(sorted({int(level) for level in head_fine_levels}))
        if any(not 0 <= level <= num_levels for level in fine_levels):
            raise ValueError(f"head_fine_levels must be in 0..num_levels={num_levels}, got {list(head_fine_levels)}.")
        if fine_levels and center_index(patch_size) % 2 ** fine_levels[-1]:
            raise ValueError(
                f"The fine-detail head reads level {fine_levels[-1]} at the centre pixel, which needs patch_size // 2 "
                f"to be a multiple of {2 ** fine_levels[-1]}; got patch_size={patch_size}."
            )
        if stem_blocks < 0:
            raise ValueError(f"stem_blocks must be >= 0, got {stem_blocks}.")
        self.head_fine_levels = fine_levels
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_levels = num_levels
        self.latent_channels = latent_channels
        self.patch_size = patch_size
        self.downsampling_factor = factor

        conv = Conv[Conv.CONV, spatial_dims]
        upconv = Conv[Conv.CONVTRANS, spatial_dims]

        def blocks(n: int) -> list[nn.Module]:
            return [
                GatedResidualBlock(spatial_dims, num_filters, act=act, norm=norm, dropout=dropout) for _ in range(n)
            ]

        self.stem = nn.Sequential(
            conv(in_channels, num_filters, kernel_size=5, padding=2), Act[act](), *blocks(stem_blocks)
        )
        self.bottom_up = nn.ModuleList(
            nn.Sequential(
                conv(num_filters, num_filters, kernel_size=3, padding=1),
                BlurPool(spatial_dims, num_filters, stride=2),
                *blocks(num_blocks),
            )
            for _ in range(num_levels)
        )
        # Top level: posterior from the top bottom-up features, GMM prior.
        self.top_posterior = _Gaussian(spatial_dims, num_filters, latent_channels)
        self.prior = GMMPrior(num_classes, latent_channels, mu_init=mu_init, learnable=learnable_prior)
        # Lower levels (index 0 = bottom): prior from top-down features, posterior from the merge.
        self.priors = nn.ModuleList(
            _Gaussian(spatial_dims, num_filters, latent_channels) for _ in range(num_levels - 1)
        )
        self.merges = nn.ModuleList(
            nn.Sequential(conv(2 * num_filters, num_filters, kernel_size=1), *blocks(1)) for _ in range(num_levels - 1)
        )
        self.posteriors = nn.ModuleList(
            _Gaussian(spatial_dims, num_filters, latent_channels) for _ in range(num_levels - 1)
        )
        # Every level: latent sample -> features, residual blocks, upsampling (x2).
        self.from_latent = nn.ModuleList(
            conv(latent_channels, num_filters, kernel_size=3, padding=1) for _ in range(num_levels)
        )
        self.top_down = nn.ModuleList(
            nn.Sequential(
                *blocks(num_blocks),
                upconv(num_filters, num_filters, kernel_size=3, stride=2, padding=1, output_padding=1),
            )
            for _ in range(num_levels)
        )
        final = num_blocks if num_final_blocks is None else num_final_blocks
        self.reconstruct_center = reconstruct_center
        self.decoder_out = nn.Sequential(*blocks(final), conv(num_filters, in_channels, kernel_size=3, padding=1))
        # Receptive radii (in pixels of their own resolution) of the last top-down level's residual blocks
        # (without its upsampling) and of the decoder.
        self._top_down_radius = receptive_field_radius(self.top_down[0][:-1])
        self._decoder_radius = receptive_field_radius(self.decoder_out)
        self.head = SegmentationHead(
            spatial_dims,
            latent_channels,
            num_classes,
            head_window,
            head_hidden,
            fine_channels=[num_filters] * len(fine_levels),
        )
        self.decoder_context = patch_size // 2 if decoder_context is None else int(decoder_context)
        if self.decoder_context < 0:
            raise ValueError(f"decoder_context must be >= 0, got {decoder_context}.")
        self.segmentation_decoder: SegmentationDecoder | None = None
        if segmentation_decoder:
            self.segmentation_decoder = SegmentationDecoder(
                spatial_dims,
                latent_channels,
                num_filters,
                num_levels,
                num_classes,
                num_blocks=decoder_blocks,
                act=act,
                norm=norm,
                dropout=dropout,
            )

    # ------------------------------------------------------------------ helpers
    def _check_input(self, x: torch.Tensor, full: bool) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Expected input of shape (B, {self.in_channels}, {', '.join(['*'] * self.spatial_dims)}), "
                f"got {tuple(x.shape)}."
            )
        if full and any(s % self.downsampling_factor for s in x.shape[2:]):
            raise ValueError(
                f"Training patches must have sides divisible by {self.downsampling_factor}, got {tuple(x.shape[2:])}."
            )

    def reconstruction_size(self, size: int) -> int:
        """Side of the reconstruction along an axis of ``size`` pixels (``size`` without ``reconstruct_center``).

        The centre ``reconstruct_center`` region plus the decoder's receptive margin on each side, with the
        parity of ``size``, so that the crop is symmetric about the centre pixel ``size // 2``; never more than
        ``size``.
        """
        if self.reconstruct_center is None:
            return size
        side = self.reconstruct_center + 2 * self._decoder_radius
        side += (size - side) % 2
        return min(side, size)

    def _top_down_bottom(self, h: torch.Tensor) -> torch.Tensor:
        """The last top-down level (half resolution to full) and the decoder, on the needed centre only."""
        if self.reconstruct_center is None:
            return self.decoder_out(self.top_down[0](h))
        half_sizes = h.shape[2:]
        sizes = [2 * s for s in half_sizes]
        out_sizes = [self.reconstruction_size(s) for s in sizes]
        # Half-resolution window centred on the patch centre, wide enough that the transposed convolution's
        # output is exact on the decoder's input region: its blocks' radius, one pixel of the upsampling,
        # one of rounding, on each side.
        half_slices, full_slices = [], []
        for half, size, out in zip(half_sizes, sizes, out_sizes):
            reach = -(-out // 4) + self._top_down_radius + 2
            start, stop = max(0, half // 2 - reach), min(half, half // 2 + reach)
            half_slices.append(slice(start, stop))
            offset = size // 2 - out // 2 - 2 * start  # decoder input start, in the upsampled window
            full_slices.append(slice(offset, offset + out))
        h = self.top_down[0](h[(slice(None), slice(None), *half_slices)])
        return self.decoder_out(h[(slice(None), slice(None), *full_slices)])

    def _sample(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def bottom_up_pass(self, x: torch.Tensor, with_stem: bool = False) -> list[torch.Tensor]:
        """Bottom-up features of every level (index 0 = bottom, resolution ``/2``); with ``with_stem`` the stem's
        output (full resolution) comes first, so that index ``l`` is fine level ``l`` of ``head_fine_levels``."""
        h = self.stem(x)
        features = [h] if with_stem else []
        for level in self.bottom_up:
            h = level(h)
            features.append(h)
        return features

    def encode_top(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-level posterior mean and log-variance; only the bottom-up path runs."""
        self._check_input(x, full=False)
        return self.top_posterior(self.bottom_up_pass(x)[-1])

    def center_features(
        self, features: Sequence[torch.Tensor], center: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """The fine-detail head's inputs: each level of ``head_fine_levels`` at the patch's centre pixel.

        Args:
            features: the output of :meth:`bottom_up_pass` with ``with_stem=True`` (stem first; deeper levels
                than the largest fine level may be left out).
            center: the centre pixel per spatial axis (default: ``size // 2`` of the input, the convention of
                every component); each must be a cell centre of every fine level (a multiple of ``2**level``).

        Returns:
            one ``B ch [1]*spatial_dims`` map per fine level (the cell centred on the centre pixel).
        """
        spatial = features[0].shape[2:]
        center = [center_index(s) for s in spatial] if center is None else list(center)
        out = []
        for level in self.head_fine_levels:
            index = []
            for c in center:
                if c % 2**level:
                    raise ValueError(
                        f"The centre pixel {c} is not a cell centre of fine level {level}; use patches whose half "
                        f"side is a multiple of {2**level}."
                    )
                index.append(slice(c // 2**level, c // 2**level + 1))
            out.append(features[level][(slice(None), slice(None), *index)])
        return out

    def fine_radius(self) -> int:
        """Receptive-field radius in pixels of the deepest fine level's cell (0 without a fine-detail head)."""
        if not self.head_fine_levels:
            return 0
        tree = PhaseTree(self)
        radius = tree.stem_radius()
        for level in range(self.head_fine_levels[-1]):
            radius += 2**level * tree.stage_radius(level, with_stem=False)
        return radius

    def unmasked_center_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The fine-detail head's inputs computed from unmasked patches, on their centre region only.

        Training patches are masked at the centre (the inpainting task), but prediction sees the whole image:
        a head that reads the centre pixel's fine features would learn them without the pixel itself. This
        computes them from the unmasked patches instead, on the centre crop that holds their receptive field
        (for the stem and the first bottom-up level a small fraction of the patch), so they equal the
        prediction-time features (in eval mode exactly).

        Args:
            x: unmasked patches ``B in_channels [spatial]``, centre pixel at ``size // 2``.
        """
        top = self.head_fine_levels[-1]
        step = 2**top
        half = -(-self.fine_radius() // step) * step
        crop, center = [], []
        for size in x.shape[2:]:
            c = center_index(size)
            lo, hi = max(0, c - half), min(size, c + half + 1)
            crop.append(slice(lo, hi))
            center.append(c - lo)
        h = self.stem(x[(slice(None), slice(None), *crop)])
        features = [h]
        for level in self.bottom_up[:top]:
            h = level(h)
            features.append(h)
        return self.center_features(features, center)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Centre-pixel logits ``(B, C)`` of (unmasked) patches: bottom-up path, top posterior means, head."""
        self._check_input(x, full=False)
        if self.segmentation_decoder is not None:
            center = tuple(center_index(s) for s in x.shape[2:])
            return self.decode_pixels(x)[(slice(None), slice(None), *center)]
        features = self.bottom_up_pass(x, with_stem=True)
        mu = self.top_posterior(features[-1])[0]
        return self.head(mu, self.center_features(features))

    def decode_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``B C [spatial]`` of every pixel of ``x`` from the segmentation decoder (ε-Seg+).

        Sides that are not multiples of ``2**num_levels`` are padded at their end (reflect, as the dense pass) and
        the output is cropped back; no context margin is added (see :meth:`forward_dense`).
        """
        if self.segmentation_decoder is None:
            raise RuntimeError("This network has no segmentation decoder (build it with segmentation_decoder=True).")
        spatial = tuple(x.shape[2:])
        extra = [(-s) % self.downsampling_factor for s in spatial]
        if any(extra):
            x = pad_border(x, [(0, e) for e in extra], "reflect")
        features = self.bottom_up_pass(x, with_stem=True)
        mu = self.top_posterior(features[-1])[0]
        logits = self.segmentation_decoder(mu, features)
        return logits[(slice(None), slice(None), *(slice(0, s) for s in spatial))]

    # ------------------------------------------------------------------ forward
    def forward_train(
        self,
        x: torch.Tensor,
        dense_inputs: torch.Tensor | None = None,
        dense_labels: torch.Tensor | None = None,
        unmasked: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Full ladder pass, and optionally the dense pass over unmasked crops (ε-Seg+).

        Args:
            x: (masked) image patches, shape ``B in_channels [spatial]``.
            unmasked: optional unmasked patches (like ``x``): the fine-detail head then reads its centre features
                from them (:meth:`unmasked_center_features`) while everything else sees the masked ``x``.
            dense_inputs: optional unmasked crops ``B' in_channels [crop]`` for the dense cross-entropy: their
                valid dense pass (:meth:`forward_dense` with ``pad_mode=None``) is computed at the labelled pixels
                of ``dense_labels`` only.
            dense_labels: sparse labels of the crops, ``B' [crop]`` or ``B' 1 [crop]`` (``0`` = unlabelled).

        Returns:
            dict with ``logits`` (B, C); ``reconstruction`` (like ``x``); per level from bottom to top,
            ``mu``/``logvar`` (posterior, BZ[spatial/2**(l+1)]), ``z`` (samples; the means in eval mode) and
            ``prior_mu``/``prior_logvar`` (prior of the level; for the top level the GMM components, (C, Z));
            with crops also ``dense_logits`` ``B' C [valid]`` and ``dense_labels`` ``B' [valid]``, the crops'
            labels on the same valid region.
        """
        self._check_input(x, full=True)
        features = self.bottom_up_pass(x, with_stem=True)
        if unmasked is not None and self.head_fine_levels:
            if unmasked.shape != x.shape:
                raise ValueError(f"unmasked patches {tuple(unmasked.shape)} must match the inputs {tuple(x.shape)}.")
            fine = self.unmasked_center_features(unmasked)
        else:
            fine = self.center_features(features)
        features = features[1:]
        # Filled from the top level down, reversed at the end (index 0 = bottom).
        mu, logvar = self.top_posterior(features[-1])
        z = self._sample(mu, logvar)
        gmm_mu, gmm_logvar = self.prior()
        levels = [(mu, logvar, z, gmm_mu, gmm_logvar)]
        h = self.from_latent[-1](z)
        for level in reversed(range(self.num_levels - 1)):
            h = self.top_down[level + 1](h)
            p_mu, p_logvar = self.priors[level](h)
            mu, logvar = self.posteriors[level](self.merges[level](torch.cat([h, features[level]], dim=1)))
            z = self._sample(mu, logvar)
            levels.append((mu, logvar, z, p_mu, p_logvar))
            h = h + self.from_latent[level](z)
        per_key = {key: list(values[::-1]) for key, values in zip(LEVEL_KEYS, zip(*levels))}
        logits = self.head(per_key["mu"][-1], fine)
        out = {"logits": logits, "reconstruction": self._top_down_bottom(h), **per_key}
        if dense_inputs is not None:
            out.update(self.dense_training_pass(dense_inputs, dense_labels))
        return out

    def dense_training_pass(self, inputs: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Logits at the labelled pixels of unmasked crops: ``dense_logits`` and ``dense_labels`` (valid region).

        The valid dense pass of a crop gives the logits of the pixels at least ``before`` / ``after``
        (:meth:`dense_padding`) from its borders; labels outside that region are not used.
        """
        if labels is None:
            raise ValueError("dense_inputs need dense_labels (the crops' sparse label maps).")
        if labels.ndim == inputs.ndim:
            labels = labels[:, 0]
        if labels.shape != (inputs.shape[0], *inputs.shape[2:]):
            raise ValueError(
                f"dense_labels must be B[crop] or B1[crop] matching dense_inputs {tuple(inputs.shape)}, "
                f"got {tuple(labels.shape)}."
            )
        if self.segmentation_decoder is not None:
            return {"dense_logits": self.decode_pixels(inputs), "dense_labels": labels.long()}
        span = (self.head.window - 1) * self.downsampling_factor
        pads = self.dense_padding()
        region = tuple(slice(before, before + s - span) for (before, _), s in zip(pads, inputs.shape[2:]))
        if any(r.stop <= r.start for r in region):
            raise ValueError(f"Crops {tuple(inputs.shape[2:])} are too small for a valid dense pass (need > {span}).")
        labels = labels[(slice(None), *region)].long()
        if self.dense_training == "atrous":
            from .dense_predictor import DensePredictor

            logits = DensePredictor(self, pad_mode=None, share_weights=True)(inputs)
        else:
            logits = self.forward_dense(inputs, pad_mode=None, needed=labels > 0)
        return {"dense_logits": logits, "dense_labels": labels}

    def forward(
        self,
        x: torch.Tensor,
        dense_inputs: torch.Tensor | None = None,
        dense_labels: torch.Tensor | None = None,
        unmasked: torch.Tensor | None = None,
    ) -> torch.Tensor | dict[str, torch.Tensor | list[torch.Tensor]]:
        """Training mode: the dict of :meth:`forward_train`. Eval mode: centre-pixel class logits ``(B, C)``."""
        if self.training:
            return self.forward_train(x, dense_inputs, dense_labels, unmasked)
        return self.classify(x)

    # ------------------------------------------------------------------ dense pass
    def dense_padding(self, patch_size: Sequence[int] | int | None = None) -> list[tuple[int, int]]:
        """``(before, after)`` per spatial axis: the extent of a training patch around its centre pixel.

        :meth:`forward_dense` pads the image by it, and a valid pass over a crop gives the logits of the pixels
        at least ``before`` / ``after`` from its start / end. With the segmentation decoder: ``decoder_context``
        on each side.
        """
        if self.segmentation_decoder is not None:
            return [(self.decoder_context, self.decoder_context)] * self.spatial_dims
        return PhaseTree(self, patch_size).pads

    def dense_receptive_field(self, patch_size: Sequence[int] | int | None = None) -> int:
        """Radius in pixels of the input region one output pixel of :meth:`forward_dense` depends on.

        With the segmentation decoder: ``decoder_context`` (the margin sliding windows overlap by; the decoder's
        true receptive field is larger, so tiles agree with the whole-image pass only approximately).
        """
        if self.segmentation_decoder is not None:
            return self.decoder_context
        return PhaseTree(self, patch_size).receptive_field()

    def forward_dense(
        self,
        x: torch.Tensor,
        pad_mode: str | None = "reflect",
        needed: torch.Tensor | None = None,
        patch_size: Sequence[int] | int | None = None,
        max_slab_voxels: int | None = None,
        progress: Any = None,
    ) -> torch.Tensor:
        """Class logits of every pixel of ``x``: exactly the centre-pixel logits of the patch around each pixel.

        Computed as a phase tree (:class:`~epsseg_monai.networks.nets.phase_tree.PhaseTree`): the cost of a few
        plain passes over the image instead of one pass per pixel. What differs from the patch-by-patch result is
        only context: a feature cell near the border of a lone patch sees zero padding, here it sees the image.
        Gradients flow (a training pass on crops, with ``needed`` for sparse labels).

        Args:
            x: ``B in_channels [spatial]`` images (any size; no divisibility needed).
            pad_mode: pad the image border by :meth:`dense_padding` with this ``torch.nn.functional.pad`` mode
                (``reflect``, as the training sampler; ``replicate`` is used where reflect cannot reach) so the
                output has the input's size; ``None``: a valid pass, the output is smaller by ``before + after``
                per axis and its position ``o`` is input pixel ``o + before``.
            needed: optional boolean ``B [output spatial]`` mask; sub-trees without a needed position are skipped
                (their logits are 0; other positions of a computed sub-grid get their logits too).
            patch_size: training patch size that defines each pixel's context (``None``: ``self.patch_size``).
            max_slab_voxels: evaluate each stage in tiles whose largest map has at most this many voxels x
                channels / 64 (exact in eval mode; leave ``None`` in training mode, batch norm).
            progress: a progress bar updated once per sub-grid.

        Returns:
            ``B C [output spatial]`` logits.
        """
        self._check_input(x, full=False)
        if self.segmentation_decoder is not None:
            return self._decoder_dense(x, pad_mode, progress)
        tree = PhaseTree(self, patch_size, max_slab_voxels, progress)
        spatial = tuple(x.shape[2:])
        if pad_mode is None:
            return tree.logits(x, needed)
        padded = pad_border(x, tree.pads, pad_mode)
        if needed is not None:  # the valid pass may give extra positions at the end (head window before the centre)
            span = (self.head.window - 1) * self.downsampling_factor
            extra = [n - span - s for n, s in zip(padded.shape[2:], spatial)]
            if any(extra):
                grown = needed.new_zeros((needed.shape[0], *(s + e for s, e in zip(spatial, extra))))
                grown[(slice(None), *(slice(0, s) for s in spatial))] = needed
                needed = grown
        out = tree.logits(padded, needed)
        return out[(slice(None), slice(None), *(slice(0, s) for s in spatial))]

    def _decoder_dense(self, x: torch.Tensor, pad_mode: str | None, progress: Any) -> torch.Tensor:
        """:meth:`forward_dense` of the segmentation decoder: one fully convolutional pass."""
        margin = self.decoder_context
        pads = [(margin, margin)] * self.spatial_dims
        if pad_mode is None:
            if any(s <= 2 * margin for s in x.shape[2:]):
                raise ValueError(f"Inputs {tuple(x.shape[2:])} are too small for a valid pass (need > {2 * margin}).")
            out = self.decode_pixels(x)
        else:
            out = self.decode_pixels(pad_border(x, pads, pad_mode))
        if progress is not None:
            progress.update(1)
        return out[(slice(None), slice(None), *(slice(margin, out.shape[2 + d] - margin) for d in range(len(pads))))]

    def dense_predictor(self, pad_mode: str | None = "reflect", patch_size: int | None = None) -> nn.Module:
        """:meth:`forward_dense` as one module that ``torch.jit.trace`` exports for any image size.

        Returns a :class:`~epsseg_monai.networks.nets.dense_predictor.DensePredictor` (the à-trous form of the
        dense pass, eval mode, a copy of the prediction path's current weights) whose ``forward(x)`` equals
        ``self.forward_dense(x, pad_mode)`` to floating-point rounding.
        """
        if self.segmentation_decoder is not None:
            raise NotImplementedError(
                "Export of a network with the segmentation decoder is not supported yet: the DensePredictor is the "
                "phase tree of the centre-pixel head. Predict with forward_dense or the bundle's inference.json."
            )
        from .dense_predictor import DensePredictor

        return DensePredictor(self, pad_mode=pad_mode, patch_size=patch_size)

    def latent_sizes(self, patch_size: int | Sequence[int] | None = None) -> list[tuple[int, ...]]:
        """Spatial sizes of the latent maps of every level (bottom to top) for a patch of ``patch_size``."""
        size = self.patch_size if patch_size is None else patch_size
        sizes = (size,) * self.spatial_dims if isinstance(size, int) else tuple(size)
        return [tuple(s // 2 ** (level + 1) for s in sizes) for level in range(self.num_levels)]
