"""The torch path of the LoRA linear (CPU, or any case the Triton kernels do not take): the rank-R
products ride on the frozen GEMMs instead of forming [M, N] intermediates.

Notation as in fused_lora.py: M tokens, K in-features, N out-features, R rank, s scale,
X [M, K], W [N, K] frozen, A [R, K], B [N, R], H = X·Aᵀ [M, R].

The plain chain (fused_lora_reference) writes X·Wᵀ and H·Bᵀ as two [M, N] tensors, scales one and
adds them, and autograd repeats that in backward (scale, add): four extra passes over [M, N]
each way, plus the memory-bound K = R product written on its own (at the benchmark shape it cost
about half the base GEMM).  Two paths replace it:

Folded (training, M >= K: `use_folded`).  The rank-R terms join the frozen GEMMs, so X and dY are
each read by one GEMM instead of a wide GEMM plus thin ones (inside a training step the thin
products ran at 2-2.5x their stand-alone time: their operands are no longer in cache):

    forward    G = [W + s·B·A ; A]   [N + R, K];   [Y | H] = X·Gᵀ             (one GEMM)
    backward   F = [W + s·B·A | s·B] [N, K + R];   [dX | dH] = dY·F          (one GEMM)
               dA = dHᵀ·X;  dB = s·(Hᵀ·dY)ᵀ   (dB first, while dY is hot)
Y and dX are strided views (row stride N + R, K + R) of the wide outputs; elementwise consumers
and autograd take them as they are (a column-parallel layer under TP makes dX contiguous before
megatron's all-reduce, peft/lora.py).  Building G or F costs one pass over W (~N·K); the passes
saved are ~M·(N + K) each way, hence the M >= K rule (`FOLD_MIN_TOKENS_PER_IN_FEATURE`).  With
a stored base weight (an nn.Parameter: LoRA) G and F are two windows of one [N + R, K + R] buffer
built once in forward and kept for backward (`folded_buffer`; one pass over W a step instead of
two, for one more weight's bytes held per adapted linear through the step).  With a temporary
base weight (QLoRA's dequantised one) F is rebuilt in backward from the saved W instead (QLoRA's
saved-tensor hook swaps that W for a marker: no full-precision copy survives the forward).

Accumulating (no dX wanted, inference, few tokens).  BLAS accumulates (beta = 1) in place:

    forward    Y = X·Wᵀ;  Y += s·H·Bᵀ                      (addmm_ into Y)
    backward   dH = s·dY·B;  dX = dY·W;  dX += dH·A;  dA = dHᵀ·X;  dB = s·dYᵀ·H
dB is formed as (Hᵀ·dY)ᵀ ([R, M]·[M, N], then a transposed view): BLAS ran that shape 2.0-2.3x
faster than dYᵀ·H at the benchmark's four linears (1 thread, same process).
No weight gradient is formed for W on either path.

Joining the rank-R columns onto the base GEMM's inner dimension instead ([X | H]·[W | s·B]ᵀ, one
GEMM) was measured too: 0.76-0.93x the chain's time against 0.72-0.83x for the accumulation.

Dropout on the LoRA input stays with the reference (fused_lora_linear routes p > 0 there).
Precision: the LoRA factors run in X's dtype, as in the reference; dA, dB come back in the
dtypes of A and B.
"""
from __future__ import annotations

import torch

from megatron_retro.parallel.cpu_compat import outside_redirect


class LoRALinearTorchFunction(torch.autograd.Function):
    """y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (+ bias) with W frozen; see the module docstring."""

    @staticmethod
    @outside_redirect
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
    @outside_redirect
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


def stacked_weight(weight, lora_a, lora_b, scale, dtype):
    """G = [W + s·B·A ; A]  [N + R, K] in ``dtype`` (forward: one GEMM gives [Y | H])."""
    n, k = weight.shape
    g = torch.empty(n + lora_a.shape[0], k, dtype=dtype, device=weight.device)
    torch.addmm(weight.to(dtype), lora_b.to(dtype), lora_a.to(dtype), alpha=scale, out=g[:n])   # [N, K]
    g[n:].copy_(lora_a)                                                                        # [R, K]
    return g


def folded_weight(weight, lora_a, lora_b, scale, dtype):
    """F = [W + s·B·A | s·B]  [N, K + R] in ``dtype`` (backward: one GEMM gives [dX | dH])."""
    n, k = weight.shape
    f = torch.empty(n, k + lora_a.shape[0], dtype=dtype, device=weight.device)
    b = lora_b.to(dtype)
    torch.addmm(weight.to(dtype), b, lora_a.to(dtype), alpha=scale, out=f[:, :k])   # [N, K] row stride K + R
    torch.mul(b, scale, out=f[:, k:])                                                # [N, R]
    return f


def _alias(wide: torch.Tensor, lead: tuple, n: int) -> torch.Tensor:
    """wide[:, :n] shaped [*lead, n] as a tensor of its own over the same storage, not a view:
    the caller may then modify Y in place (autograd forbids that on a view made inside a custom
    Function).  Safe because the H columns are copied out before anything else runs."""
    strides, step = [1], wide.stride(0)
    for size in reversed(lead):
        strides.insert(0, step)
        step *= size
    return torch.empty(0, dtype=wide.dtype, device=wide.device).set_(
        wide.untyped_storage(), wide.storage_offset(), (*lead, n), tuple(strides))


def folded_buffer(weight, lora_a, lora_b, scale, dtype):
    """One [N + R, K + R] buffer holding both stacked weights (built once a step when kept):
        buf[:N, :K] = W + s·B·A,  buf[N:, :K] = A,  buf[:N, K:] = s·B   (buf[N:, K:] is never read)
    G = buf[:, :K] (forward, row stride K + R) and F = buf[:N] (backward) share the merged block."""
    n, k = weight.shape
    r = lora_a.shape[0]
    buf = torch.empty(n + r, k + r, dtype=dtype, device=weight.device)
    b = lora_b.to(dtype)
    torch.addmm(weight.to(dtype), b, lora_a.to(dtype), alpha=scale, out=buf[:n, :k])   # [N, K]
    buf[n:, :k].copy_(lora_a)                                                          # [R, K]
    torch.mul(b, scale, out=buf[:n, k:])                                               # [N, R]
    return buf


def keeps_folded_weight(weight) -> bool:
    """Keep the stacked buffer from forward to backward (one build a step instead of two) when
    the base weight is a stored parameter: its full-precision copy lives through the step anyway,
    so the buffer costs one more weight's bytes per adapted linear.  A temporary weight (QLoRA's
    dequantised one) is rebuilt in backward instead: no full-precision copy outlives the forward."""
    return isinstance(weight, torch.nn.Parameter)


class LoRAFoldedLinearFunction(torch.autograd.Function):
    """The same y and gradients with the rank-R terms folded into the frozen GEMMs (module docstring)."""

    @staticmethod
    @outside_redirect
    def forward(ctx, x, weight, lora_a, lora_b, bias, scale):
        lead, k = x.shape[:-1], x.shape[-1]
        n = weight.shape[0]
        x2 = x.reshape(-1, k)                                          # [M, K]
        keep = keeps_folded_weight(weight)
        if keep:
            buf = folded_buffer(weight, lora_a, lora_b, scale, x.dtype)   # [N + R, K + R]
            g = buf[:, :k]                                             # [N + R, K] row stride K + R
        else:
            g = stacked_weight(weight, lora_a, lora_b, scale, x.dtype)     # [N + R, K]
        yh = x2 @ g.t()                                                # [M, N + R] = [Y | H]
        y, h = _alias(yh, lead, n), yh[:, n:]                          # Y [*lead, N] strided (row stride N + R)
        if bias is not None:
            y.add_(bias.to(x.dtype))
        ctx.scale, ctx.lead = scale, lead
        # H copied out ([M, R]): a view would keep all of [Y | H] alive until backward.  F is
        # either kept (buf[:N], a stored parameter's base) or rebuilt in backward from W (QLoRA's
        # hook re-dequantises W there)
        ctx.save_for_backward(x2, h.contiguous(), buf[:n] if keep else weight, lora_a, lora_b)
        ctx.kept = keep
        return y

    @staticmethod
    @outside_redirect
    def backward(ctx, dy):
        x2, h, weight, lora_a, lora_b = ctx.saved_tensors
        k = x2.shape[1]
        dy2 = dy.reshape(-1, dy.shape[-1]).to(x2.dtype)                # [M, N]
        _, _, need_a, need_b, need_bias, _ = ctx.needs_input_grad
        db = (h.t() @ dy2).mul_(ctx.scale).t().to(lora_b.dtype) if need_b else None   # [N, R]; dY still hot
        dbias = dy2.sum(0) if need_bias else None
        f = weight if ctx.kept else folded_weight(weight, lora_a, lora_b, ctx.scale, x2.dtype)   # [N, K + R]
        dxh = dy2 @ f                                                  # [M, K + R] = [dX | dH]
        dx, dh = dxh[:, :k], dxh[:, k:]                                # dX strided (row stride K + R)
        da = (dh.t() @ x2).to(lora_a.dtype) if need_a else None        # [R, K]
        return dx.view(*ctx.lead, k), None, da, db, dbias, None


FOLD_MIN_TOKENS_PER_IN_FEATURE = 1.0   # fold when M >= this · K (tests set 0 to fold tiny shapes)


def use_folded(x, weight) -> bool:
    """Fold when dX is wanted and the tokens outnumber the in-features (building G and F costs
    ~N·K each, the passes they save ~M·(N + K))."""
    return (torch.is_grad_enabled() and x.requires_grad
            and x.numel() // x.shape[-1] >= FOLD_MIN_TOKENS_PER_IN_FEATURE * weight.shape[1])


def lora_linear_torch(x, weight, lora_a, lora_b, scale, bias=None):
    """LoRA linear without dropout through the torch path (folded or accumulating); equals
    fused_lora_reference."""
    fn = LoRAFoldedLinearFunction if use_folded(x, weight) else LoRALinearTorchFunction
    return fn.apply(x, weight, lora_a, lora_b, bias, float(scale))
