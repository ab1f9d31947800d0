"""The accumulating torch path of the LoRA linear (kernels/lora_torch.py) equals the plain
reference chain: output and every gradient, odd shapes, with and without bias, fp32 and bf16,
and fused_lora_linear takes it on CPU when there is no dropout."""
import pytest
import torch

from megatron_retro.kernels import fused_lora_linear, fused_lora_reference
from megatron_retro.kernels import lora_torch


def _case(dtype, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(9, 5, 41, generator=g).to(dtype)                  # [.., M, K]
    w = (torch.randn(37, 41, generator=g) * 0.1).to(dtype)            # [N, K]
    a = torch.randn(3, 41, generator=g) * 0.1                          # [R, K] fp32 adapters
    b = torch.randn(37, 3, generator=g) * 0.1                          # [N, R]
    bb = torch.randn(37, generator=g).to(dtype) if bias else None
    dy = torch.randn(9, 5, 37, generator=g).to(dtype)
    return x, w, a, b, bb, dy


def _run(fn, x, w, a, b, bb, dy):
    leaves = [t.clone().requires_grad_() for t in (x, a, b)] + ([bb.clone().requires_grad_()] if bb is not None else [])
    y = fn(leaves[0], w, leaves[1], leaves[2], 1.7, leaves[3] if bb is not None else None)
    y.backward(dy)
    return [y.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_matches_reference_chain(dtype, tol, bias):
    args = _case(dtype, bias)
    got = _run(lora_torch.lora_linear_torch, *args)
    ref = _run(fused_lora_reference, *args)
    for name, g, r in zip(["y", "dx", "da", "db", "dbias"], got, ref):
        assert g.dtype == r.dtype, name
        torch.testing.assert_close(g.float(), r.float(), rtol=tol, atol=tol * r.float().abs().max().item(), msg=name)


def test_fused_lora_linear_takes_it_on_cpu_without_dropout(monkeypatch):
    calls = []
    real = lora_torch.LoRALinearTorchFunction.apply
    monkeypatch.setattr(lora_torch.LoRALinearTorchFunction, "apply", lambda *a: calls.append(1) or real(*a))
    x, w, a, b, _, _ = _case(torch.float32, False)
    fused_lora_linear(x, w, a, b, 2.0)
    assert calls == [1]
    fused_lora_linear(x, w, a, b, 2.0, dropout_p=0.1)   # dropout: the reference chain
    assert calls == [1]
