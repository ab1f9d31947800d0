"""The torch path of the LoRA linear (CPU, or any case the Triton kernels do not take): the rank-R
products accumulate into the base GEMM's output instead of forming [M, N] intermediates.

Notation as in fused_lora.py: M tokens, K in-features, N out-features, R rank, s scale,
X [M, K], W [N, K] frozen, A [R, K], B [N, R], H = X·Aᵀ [M, R].

The plain chain (fused_lora_reference) writes X·Wᵀ and H·Bᵀ as two [M, N] tensors, scales one and
adds them, and autograd repeats that in backward (scale, add): four extra passes over [M, N]
each way, plus the memory-bound K = R product written on its own (at the benchmark shape it cost
about half the base GEMM).  Here BLAS accumulates (beta = 1) the rank-R terms in place:

    forward    Y = X·Wᵀ;  Y += s·H·Bᵀ                      (addmm_ into Y)
    backward   dH = s·dY·B;  dX = dY·W;  dX += dH·A;  dA = dHᵀ·X;  dB = s·dYᵀ·H
dB is formed as (Hᵀ·dY)ᵀ ([R, M]·[M, N], then a transposed view): BLAS ran that shape 2.0-2.3x
faster than dYᵀ·H at the benchmark's four linears (1 thread, same process).
No weight gradient is formed for W.  W itself is what is saved, so QLoRA's saved-tensor hook
still swaps the dequantised weight for a marker (no full-precision copy survives the forward).

Joining the rank-R columns onto the base GEMM's inner dimension ([X | H]·[W | s·B]ᵀ, one GEMM)
was measured too, interleaved in one process at the benchmark shapes: 0.76-0.93x the chain's
time against 0.72-0.83x for this accumulation (the joins' copies and an odd inner size cost more
than the accumulate pass), so the accumulation is what runs.

Dropout on the LoRA input stays with the reference (fused_lora_linear routes p > 0 there).
Precision: the LoRA factors run in X's dtype, as in the reference; dA, dB come back in the
dtypes of A and B.
"""
from __future__ import annotations

import torch


class LoRALinearTorchFunction(torch.autograd.Function):
    """y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (+ bias) with W frozen; see the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, lora_a, lora_b, bias, scale):
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k)                                          # [M, K]
        w = weight.to(x.dtype)
        h = x2 @ lora_a.to(x.dtype).t()                                # [M, R]
        y = x2 @ w.t() if bias is None else torch.addmm(bias.to(x.dtype), x2, w.t())   # [M, N]
        y.addmm_(h, lora_b.to(x.dtype).t(), alpha=scale)
        ctx.scale, ctx.lead = scale, lead
        # W only when dX is wanted: a frozen input (layer 0 after a frozen embedding) needs none,
        # and under QLoRA a saved W is dequantised again in backward
        ctx.save_for_backward(x2, h, weight if ctx.needs_input_grad[0] else None, lora_a, lora_b)
        return y.view(*lead, y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        x2, h, weight, lora_a, lora_b = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1]).to(x2.dtype)                # [M, N]
        need_x, _, need_a, need_b, need_bias, _ = ctx.needs_input_grad
        dx = da = db = dbias = None
        if need_x or need_a:
            dh = (dy2 @ lora_b.to(x2.dtype)).mul_(ctx.scale)           # [M, R]
            if need_x:
                dx = dy2 @ weight.to(x2.dtype)                         # [M, K]
                dx.addmm_(dh, lora_a.to(x2.dtype))
                dx = dx.view(*ctx.lead, x2.shape[1])
            if need_a:
                da = (dh.t() @ x2).to(lora_a.dtype)                    # [R, K]
        if need_b:
            db = (h.t() @ dy2).mul_(ctx.scale).t().to(lora_b.dtype)    # [N, R] as (Hᵀ·dY)ᵀ
        if need_bias:
            dbias = dy2.sum(0)
        return dx, None, da, db, dbias, None


def lora_linear_torch(x, weight, lora_a, lora_b, scale, bias=None):
    """LoRA linear without dropout through the accumulating torch path; equals fused_lora_reference."""
    return LoRALinearTorchFunction.apply(x, weight, lora_a, lora_b, bias, float(scale))
