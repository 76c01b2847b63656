"""The dense pass of an ε-Seg network as one exportable module: strides turned into dilations (à trous).

:meth:`EpsSegHVAE.forward_dense <epsseg_monai.networks.EpsSegHVAE.forward_dense>` computes the logits of every
pixel as a phase tree (:mod:`~epsseg_monai.networks.nets.phase_tree`): fast and memory-frugal, but Python
control flow over phases, tiles and shapes, which TorchScript and ONNX cannot follow for other image sizes.
:class:`DensePredictor` computes the same numbers in the equivalent à-trous form: every blur-pool keeps stride
1 and the convolutions after it are dilated by the stride they would have had (``2**level``), so every map stays
at input resolution and the pass is a plain chain of convolutions with constant padding and slicing, traceable
once and valid for any input size. Each convolution does the same arithmetic per output pixel as in the phase
tree (a cell of a phase map is a pixel of the à-trous map, and its zero padding at the map border is the same),
so the two agree to floating-point rounding; the tests check it. It costs about the same multiply-adds as the
phase tree but keeps every map at full resolution (memory grows with the image; tile large images with
:class:`~epsseg_monai.inferers.DenseInferer` or :class:`~epsseg_monai.inferers.DenseSlidingWindowInferer`).

Used for the TorchScript and bioimage.io exports (``python -m epsseg_monai.export``) and as the predictor that
MONAI's sliding-window inferer tiles.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...utils import unwrap_network
from ..blocks.blur_pool import BlurPool

__all__ = ["DensePredictor", "dilate"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _copy(module: nn.Module, share: bool) -> nn.Module:
    """A deep copy of ``module``; with ``share`` its parameters and buffers are the original's tensors."""
    if not share:
        return copy.deepcopy(module)
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


def dilate(module: nn.Module, dilation: int, share: bool = False) -> nn.Module:
    """A copy of ``module`` whose convolutions are dilated by ``dilation`` (padding scaled alike).

    Args:
        module: stride-1 convolutions with zero padding and pointwise layers (activations, eval-mode norms,
            gates); other spatial layers are refused.
        dilation: the factor (the stride of the map the module ran on in the strided network).
        share: the copy uses the original's parameters and buffers (training through it trains the original).

    Raises:
        ValueError: for a strided convolution, a string or non-zero padding mode, or a spatial layer other than
            a convolution (pooling, blur-pool, transposed convolution).
    """
    out = _copy(module, share)
    for name, m in out.named_modules():
        if isinstance(m, _CONVS):
            if any(s != 1 for s in m.stride) or isinstance(m.padding, str) or m.padding_mode != "zeros":
                raise ValueError(f"Cannot dilate {name or type(m).__name__}: needs stride 1 and zero padding.")
            m.dilation = tuple(dilation * d for d in m.dilation)
            m.padding = tuple(dilation * p for p in m.padding)
        elif isinstance(m, (BlurPool, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)) or (
            isinstance(m, nn.modules.conv._ConvTransposeNd)
        ):
            raise ValueError(f"Cannot dilate {name or type(m).__name__}: a strided spatial layer.")
    return out


class _AtrousBlur(nn.Module):
    """A :class:`BlurPool` at stride 1, its taps ``dilation`` apart (one pixel of padding scaled alike)."""

    def __init__(self, pool: BlurPool, dilation: int) -> None:
        super().__init__()
        self.register_buffer("kernel", pool.kernel.detach().clone())
        self.channels = pool.channels
        self.dilation = dilation
        self.spatial_dims = pool.spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 3:
            return F.conv3d(x, self.kernel, padding=self.dilation, dilation=self.dilation, groups=self.channels)
        if self.spatial_dims == 2:
            return F.conv2d(x, self.kernel, padding=self.dilation, dilation=self.dilation, groups=self.channels)
        return F.conv1d(x, self.kernel, padding=self.dilation, dilation=self.dilation, groups=self.channels)


class DensePredictor(nn.Module):
    """Per-pixel class logits of an :class:`~epsseg_monai.networks.EpsSegHVAE`, as one traceable module.

    ``forward(x)`` equals ``net.forward_dense(x, pad_mode=pad_mode)`` (eval mode) to floating-point rounding (see
    the module docstring): with ``pad_mode`` (``"reflect"``, ``"replicate"`` or ``"constant"``) the image border
    is padded by :meth:`EpsSegHVAE.dense_padding <epsseg_monai.networks.EpsSegHVAE.dense_padding>` and the
    output has the input's size; with ``None`` it is the valid pass, smaller by ``before + after`` per axis,
    output position ``o`` being input pixel ``o + before``. ``reflect`` needs every side larger than the padding.

    By default the predictor holds copies of the prediction path's weights (stem, bottom-up path, top posterior,
    head) and stays in eval mode (batch-norm running statistics, no dropout): build it from the trained network
    (:meth:`EpsSegHVAE.dense_predictor <epsseg_monai.networks.EpsSegHVAE.dense_predictor>`). ``torch.jit.trace``
    on one input size gives a module valid for every size.

    Attributes:
        pads: ``(before, after)`` per spatial axis.
        receptive_field: radius in pixels of the input region one output pixel depends on (the halo a tiler
            needs so that tiles give the untiled result).

    Args:
        net: the network.
        pad_mode: border padding (``torch.nn.functional.pad`` mode) or ``None`` for the valid pass.
        patch_size: training patch size that defines each pixel's context (``None``: ``net.patch_size``).
        share_weights: use the network's own parameters and buffers instead of copies, and follow ``train()``
            (a training pass: gradients reach the network, batch norm uses the batch statistics). Build it per
            use: moving the network to another device afterwards is not followed.
    """

    def __init__(
        self,
        net: nn.Module,
        pad_mode: str | None = "reflect",
        patch_size: int | None = None,
        share_weights: bool = False,
    ) -> None:
        super().__init__()
        net = unwrap_network(net)
        if pad_mode not in (None, "reflect", "replicate", "constant"):
            raise ValueError(f"pad_mode must be reflect, replicate, constant or None, got {pad_mode!r}.")
        self.spatial_dims = int(net.spatial_dims)
        self.num_classes = int(net.num_classes)
        self.in_channels = int(net.in_channels)
        self.pad_mode = pad_mode
        self.share_weights = share_weights
        self.pads = [tuple(p) for p in net.dense_padding(patch_size)]
        self.receptive_field = int(net.dense_receptive_field(patch_size))
        levels = len(net.bottom_up)
        self.fine_levels = sorted(int(level) for level in getattr(net, "head_fine_levels", ()))
        share = share_weights
        self.stem = _copy(net.stem, share)
        stages = []
        for level, stage in enumerate(net.bottom_up):
            modules = list(stage)
            if not isinstance(modules[1], BlurPool):
                raise TypeError(f"Level {level} of the bottom-up path does not downsample with a BlurPool.")
            stages.append(
                nn.Sequential(
                    dilate(modules[0], 2**level, share),
                    _AtrousBlur(modules[1], 2**level),
                    *(dilate(m, 2 ** (level + 1), share) for m in modules[2:]),
                )
            )
        self.stages = nn.ModuleList(stages)
        self.top_posterior = dilate(net.top_posterior.conv, 2**levels, share)
        head = net.head
        self.head_in = _copy(head.net[0], share)
        self.head_window = dilate(head.net[2], 2**levels, share)
        self.head_out = _copy(head.net[4], share)
        self.head_fine = _copy(head.fine, share)
        span = (head.window - 1) * 2**levels
        # fine maps are read at output position o + before; their last needed pixel is span - before from the end
        self.fine_start = [before for before, _ in self.pads]
        self.fine_stop = [span - before for before, _ in self.pads]
        if any(s < 0 for s in self.fine_stop):
            raise ValueError(f"Padding {self.pads} is inconsistent with the head window span {span}.")
        self.flat_pads = [v for p in reversed(self.pads) for v in p]
        if share_weights:
            self.train(net.training)
        else:
            self.eval()
            for p in self.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> DensePredictor:
        """An exported predictor (own weights) stays in eval mode; one sharing the network's weights follows."""
        return super().train(mode and self.share_weights)

    def _crop(self, f: torch.Tensor) -> torch.Tensor:
        """The pixels of a fine level's map at the centre pixels of the output positions (constant slicing)."""
        index = [slice(None), slice(None)]
        for start, stop in zip(self.fine_start, self.fine_stop):
            index.append(slice(start, -stop if stop > 0 else None))
        return f[tuple(index)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B C [spatial]`` logits of ``B in_channels [spatial]`` images (valid pass: smaller by the padding)."""
        if self.pad_mode is not None and any(v > 0 for v in self.flat_pads):
            x = F.pad(x, self.flat_pads, mode=self.pad_mode)
        h = self.stem(x)
        fine = [h] if 0 in self.fine_levels else []
        for level, stage in enumerate(self.stages):
            h = stage(h)
            if level + 1 in self.fine_levels:
                fine.append(h)
        mu = torch.chunk(self.top_posterior(h), 2, dim=1)[0]
        hidden = self.head_window(torch.relu(self.head_in(mu)))
        for proj, f in zip(self.head_fine, fine):
            hidden = hidden + proj(self._crop(f))
        return self.head_out(torch.relu(hidden))
