"""Tests of ``epsseg_monai.inferers.autocast``: bfloat16 training forward passes with float32 outputs."""

from __future__ import annotations

import pytest
import torch

import epsseg_monai.inferers.autocast as autocast
import epsseg_monai.utils as utils
from epsseg_monai.inferers import AutocastInferer
from epsseg_monai.networks import EpsSegHVAE


def _net() -> EpsSegHVAE:
    torch.manual_seed(0)
    return EpsSegHVAE(2, 1, 3, num_levels=2, num_filters=8, num_blocks=1, latent_channels=4, patch_size=16,
                      head_window=4, head_hidden=8, dropout=0.0).train()  # fmt: skip


def test_disabled_is_a_plain_call():
    net, x = _net(), torch.randn(4, 1, 16, 16)
    torch.manual_seed(1)
    expected = net(x)
    torch.manual_seed(1)
    out = AutocastInferer(False)(x, net)
    for key in ("logits", "reconstruction"):
        torch.testing.assert_close(out[key], expected[key], rtol=0, atol=0)


def test_enabled_computes_in_bfloat16_returns_float32_and_backpropagates():
    net, x = _net(), torch.randn(4, 1, 16, 16)
    inside = []
    handle = net.head.register_forward_hook(lambda m, i, o: inside.append(o.dtype))
    torch.manual_seed(1)
    reference = net(x)
    torch.manual_seed(1)
    out = AutocastInferer(True)(x, net)
    handle.remove()
    assert inside == [torch.float32, torch.bfloat16], "the second call did not run in bfloat16"
    assert out["logits"].dtype == torch.float32 and all(m.dtype == torch.float32 for m in out["mu"])
    assert out["prior_mu"][-1].dtype == torch.float32
    # bfloat16 keeps ~3 significant digits: close to float32, not equal
    torch.testing.assert_close(out["logits"], reference["logits"], atol=0.05, rtol=0.05)
    assert not torch.equal(out["logits"], reference["logits"])

    def loss(o):
        return o["logits"].logsumexp(1).mean() + o["reconstruction"].square().mean() + o["prior_mu"][0].mean()

    loss(reference).backward()
    expected = {name for name, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    loss(out).backward()
    grads = {name: p.grad for name, p in net.named_parameters() if p.grad is not None}
    assert set(grads) == expected and len(expected) > 10
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())


def test_auto_follows_the_device_capability(monkeypatch):
    for capable in (True, False):
        monkeypatch.setattr(utils, "fast_bfloat16", lambda device, c=capable: c)
        assert AutocastInferer("auto").enabled("cpu") is capable


def test_to_float32_keeps_structure_and_integer_tensors():
    data = {"a": [torch.ones(2, dtype=torch.bfloat16), (torch.zeros(1, dtype=torch.float16),)],
            "b": torch.arange(3), "c": 1.5}  # fmt: skip
    out = autocast.to_float32(data)
    assert out["a"][0].dtype == torch.float32 and isinstance(out["a"][1], tuple)
    assert out["a"][1][0].dtype == torch.float32
    assert out["b"].dtype == torch.int64 and out["c"] == 1.5


def test_bad_option_is_named():
    with pytest.raises(ValueError, match="amp must be"):
        AutocastInferer("bf16")  # "yes" now reads as true, like the bundle's flags
