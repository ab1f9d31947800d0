"""Kernel errors bounded by the dtype: ‖kernel − float64 reference‖ ≤ c·(u·‖ref‖ + √n·u_fp32·‖|operands|‖)
(kernel_test_utils.roundoff_ratio; u = unit roundoff of the compute dtype, n = reduction length),
plus mutation checks: a 1% scale error, a transposed B, a wrong RETRO shift must each fail.

The float64 reference sees the operands as the kernel does (fp32 adapters rounded to the
activation dtype, as the kernels' contract says), so only the kernel's own roundings remain.
Inputs are chosen so that the term under test dominates (a LoRA term larger than the base GEMM,
peaked attention), else a 1% error in it would hide below a bf16 rounding of the output.
"""
import importlib

import pytest
import torch

from megatron_retro.kernels import fused_lora as fl
from megatron_retro.kernels import nf4

from kernel_test_utils import ROUNDOFF_C, assert_within_roundoff, poisoned_empty, roundoff_ratio

cca = importlib.import_module("megatron_retro.kernels.chunked_cross_attention")
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(fl, "empty", poisoned_empty)
    monkeypatch.setattr(cca, "empty", poisoned_empty)


# -- fused LoRA -------------------------------------------------------------------------------------
M, K, N, R, S = 48, 64, 96, 8, 2.0


def lora_ratios(dtype, mutation=None):
    """{output: error / roundoff bound} of the Triton fused LoRA (forward, dX, dA, dB)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(M, K, generator=g).to(dtype)
    w = (0.25 * torch.randn(N, K, generator=g) / K ** 0.5).to(dtype)   # base term smaller than LoRA's
    a = torch.randn(R, K, generator=g) / K ** 0.5                      # fp32 adapters
    b = torch.randn(N, R, generator=g) / R ** 0.5
    bias = (0.1 * torch.randn(N, generator=g)).to(dtype)
    dy = torch.randn(M, N, generator=g).to(dtype)
    xk, ak, bk = (t.clone().requires_grad_() for t in (x, a, b))
    scale, b_in = S, bk
    if mutation == "scale":
        scale = S * 1.01
    elif mutation == "transposed_b":   # a kernel indexing B as Bᵀ reads this memory
        b_in = bk.t().contiguous().view(N, R)
    y = fl.fused_lora_linear(xk, w, ak, b_in, scale, bias, backend="triton")
    got = (y, *torch.autograd.grad(y, (xk, ak, bk), dy))
    assert (got[0].dtype, got[1].dtype, got[2].dtype, got[3].dtype) == (dtype, dtype, torch.float32, torch.float32)
    xr = x.double().requires_grad_()
    ar, br = (t.to(dtype).double().requires_grad_() for t in (a, b))
    yr = fl.fused_lora_reference(xr, w.double(), ar, br, S, bias.double())
    want = (yr, *torch.autograd.grad(yr, (xr, ar, br), dy.double()))
    nx, nw, na, nb, ndy = (t.double().norm().item() for t in (x, w, ar, br, dy))
    mags = {"y": (K, nx * nw + S * nx * na * nb), "dx": (N, ndy * (nw + S * nb * na)),
            "da": (M, S * ndy * nb * nx), "db": (M, S * ndy * nx * na)}
    return {name: (gt, wt, dtype, n, mag) for (name, (n, mag)), gt, wt in zip(mags.items(), got, want)}


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_lora_within_roundoff(dtype):
    for name, (gt, wt, dt, n, mag) in lora_ratios(dtype).items():
        assert_within_roundoff(gt, wt, dt, n, mag, what=f"fused_lora {name}")


@pytest.mark.parametrize("mutation", ["scale", "transposed_b"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_lora_mutations_fail(dtype, mutation):
    for name, (gt, wt, dt, n, mag) in lora_ratios(dtype, mutation).items():
        ratio = roundoff_ratio(gt, wt, dt, n, mag)
        assert ratio > ROUNDOFF_C, f"{mutation}: fused_lora {name} still within the bound ({ratio:.2f})"


# -- chunked cross-attention ------------------------------------------------------------------------
NS, CH, NK, BS, H, HD = 40, 16, 24, 2, 2, 16


def cca_ratios(dtype, mutation=None, monkeypatch=None):
    g = torch.Generator().manual_seed(1)
    l = cca.num_chunks(NS, CH)
    q = (2.0 * torch.randn(NS, BS, H, HD, generator=g)).to(dtype)   # peaked softmax: the scale matters
    k = torch.randn(BS, l, NK, H, HD, generator=g).to(dtype)
    v = torch.randn(BS, l, NK, H, HD, generator=g).to(dtype)
    do = torch.randn(NS, BS, H, HD, generator=g).to(dtype)
    scale = HD ** -0.5
    if mutation == "scale":
        scale *= 1.01
    elif mutation == "shift":   # the kernel's causal shift off by one token
        pad = cca.chunk_pad
        monkeypatch.setattr(cca, "chunk_pad", lambda ns, m: (pad(ns, m) + 1) % m)
    qk, kk, vk = (t.clone().requires_grad_() for t in (q, k, v))
    out = cca.chunked_cross_attention(qk, kk, vk, CH, softmax_scale=scale, backend="triton")
    got = (out, *torch.autograd.grad(out, (qk, kk, vk), do))
    if mutation == "shift":
        monkeypatch.undo()
    qr, kr, vr = (t.double().requires_grad_() for t in (q, k, v))
    outr = cca.chunked_cross_attention_reference(qr, kr, vr, CH, HD ** -0.5)
    want = (outr, *torch.autograd.grad(outr, (qr, kr, vr), do.double()))
    nq, nk_, nv, ndo = (t.double().norm().item() for t in (q, k, v, do))
    s = HD ** -0.5
    mags = {"out": (NK, nv), "dq": (NK, s * ndo * nv * nk_), "dk": (CH, s * ndo * nv * nq), "dv": (CH, ndo)}
    return {name: (gt, wt, dtype, n, mag) for (name, (n, mag)), gt, wt in zip(mags.items(), got, want)}


@pytest.mark.parametrize("dtype", DTYPES)
def test_cca_within_roundoff(dtype):
    for name, (gt, wt, dt, n, mag) in cca_ratios(dtype).items():
        assert gt.dtype == dtype
        assert_within_roundoff(gt, wt, dt, n, mag, what=f"cca {name}")


@pytest.mark.parametrize("mutation", ["scale", "shift"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cca_mutations_fail(dtype, mutation, monkeypatch):
    ratios = {name: roundoff_ratio(gt, wt, dt, n, mag)
              for name, (gt, wt, dt, n, mag) in cca_ratios(dtype, mutation, monkeypatch).items()}
    assert ratios["out"] > ROUNDOFF_C, f"{mutation}: cca out still within the bound ({ratios})"


# -- NF4 dequantisation -----------------------------------------------------------------------------
def nf4_ratio(dtype, mutation=None):
    w = torch.randn(48, 80, generator=torch.Generator().manual_seed(0))
    packed, absmax = nf4.nf4_quantize(w)
    scales = absmax * 1.01 if mutation == "scale" else absmax
    got = nf4.nf4_dequantize(packed, scales, w.shape, dtype, backend="triton")
    want = nf4.nf4_dequantize_reference(packed, absmax.double(), w.shape, torch.float64)
    return got, want


@pytest.mark.parametrize("dtype", DTYPES)
def test_nf4_within_roundoff_and_scale_mutation_fails(dtype):
    got, want = nf4_ratio(dtype)
    assert_within_roundoff(got, want, dtype, 1, 0.0, what="nf4 dequantize")
    got, want = nf4_ratio(dtype, "scale")
    assert roundoff_ratio(got, want, dtype, 1, 0.0) > ROUNDOFF_C
