"""Mixed-precision (bfloat16) forward passes for training engines, on CPU as well as on GPU.

``monai.engines.SupervisedTrainer(amp=True)`` autocasts on CUDA only (float16 with a gradient scaler).
CPUs with AVX-512 BF16 or AMX compute bfloat16 natively: the ε-Seg training step of the CPU preset is about
1.5x faster in bfloat16 there. bfloat16 keeps float32's exponent range, so no loss scaling is needed. This
inferer runs the network under ``torch.autocast(dtype=torch.bfloat16)`` on the input's device and hands the
outputs back in float32, so the losses (distances, KL, squared errors) are computed in full precision.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

from epsseg_monai.utils import check_amp, use_bfloat16

__all__ = ["AutocastInferer", "to_float32"]


def to_float32(data: Any) -> Any:
    """``data`` with every floating-point tensor (also inside lists, tuples and dicts) cast to float32."""
    if isinstance(data, torch.Tensor):
        return data.float() if data.is_floating_point() else data
    if isinstance(data, dict):
        return {k: to_float32(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(to_float32(v) for v in data)
    return data


class AutocastInferer(Inferer):
    """Run ``network(inputs)`` in bfloat16 autocast and return float32 outputs (a training inferer).

    Use it as the ``inferer`` of a ``monai.engines.SupervisedTrainer`` (``bundle/configs/train.json``:
    ``"train_amp"``). Gradients flow through the casts as usual; parameters and optimiser state stay float32.

    Args:
        amp: ``True`` autocasts, ``False`` runs in float32 (a plain call), ``"auto"`` autocasts only where the
            input's device computes bfloat16 natively (:func:`epsseg_monai.utils.fast_bfloat16`), since emulated
            bfloat16 is slower than float32.
    """

    def __init__(self, amp: bool | str = "auto") -> None:
        super().__init__()
        self.amp = check_amp(amp)
        self._fast: dict[torch.device, bool] = {}

    def enabled(self, device: torch.device | str) -> bool:
        """Whether a call on ``device`` autocasts."""
        device = torch.device(device)
        if device not in self._fast:  # "auto" reads /proc/cpuinfo: once per device, not every step
            self._fast[device] = use_bfloat16(self.amp, device)
        return self._fast[device]

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        """``network(inputs, *args, **kwargs)``, in bfloat16 autocast when enabled, with float32 outputs."""
        if not self.enabled(inputs.device):
            return network(inputs, *args, **kwargs)
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16):
            outputs = network(inputs, *args, **kwargs)
        return to_float32(outputs)
