"""RETRO chunked cross-attention (CCA): flash-style Triton forward/backward + torch reference.

Notation (RETRO, see DESIGN.md):
    ns sequence length   bs micro-batch   h attention heads   hd head dim
    m  chunk length (64) l = ceil(ns / m) chunks   k neighbours per chunk
    r  neighbour length (chunk + continuation, 128)   nk = k·r neighbour tokens per chunk
    pad = (ns - 1) % m   (tokens before the first attending one)

Semantics (identical to megatron-core <= 0.15 `RetroDecoderCrossAttention` followed by its
bias-dropout-add un-permute, on the projected queries/keys/values).  RETRO shifts the decoder
sequence left by m - 1 so that a chunk's neighbours are only seen once the chunk is complete:
token t (t >= pad) belongs to attending chunk c = (t - pad) // m and attends to the nk neighbour
tokens of chunk c; tokens t < pad attend to nothing and get 0:

    out[t, b, h] = 0                                               t < pad
    out[t, b, h] = softmax(s · q[t, b, h] · K[b, c, :, h]ᵀ) · V[b, c, :, h]   otherwise

Interface (the kernel does the shift by indexing, no pad/permute copies of q or the output):
    q    [ns, bs, h, hd]        projected decoder queries of the whole (unshifted) sequence;
                                any strides (e.g. a view into a fused projection)
    k, v [bs, l, nk, h, hd]     projected neighbour keys/values of each chunk; any strides, e.g.
                                `neighbours_as_kv(...)` views megatron's [r, k·bs·l, h, hd].
                                (Grouped-query k, v [bs, l, nk, h_kv, hd], h_kv | h, run on the
                                torch reference only; the dispatch reason says so.)
    out  [ns, bs, h, hd]        contiguous; the caller applies the output projection.  Megatron
                                gives rows t < pad exactly zero after its projection too (it pads
                                after the projection + bias): zero those rows again if the
                                projection has a bias.

Forward (grid: one program per (chunk, batch, head); m <= 128 queries fit one block): load the
chunk's m query rows t = pad + c·m + j once, stream the nk keys/values in BLOCK_N tiles with an
online softmax (running max mᵢ, normaliser ℓᵢ, rescaled accumulator), so the [m, nk] score
matrix never reaches memory; store O and the row log-sum-exp L = mᵢ + log ℓᵢ.  Chunk-0 programs
also write the zero rows t < pad.

Backward.  With S = s·Q·Kᵀ, P = softmax(S) = exp(S − L), O = P̃·V where P̃ = P ⊙ Z/(1−p) is the
attention-dropout-masked P (P̃ = P without dropout), and dO given:
    dV  = P̃ᵀ·dO                             [nk, hd]
    dP̃  = dO·Vᵀ,  dP = dP̃ ⊙ Z/(1−p)         [m, nk]
    dS  = P ⊙ (dP − D),  D = rowsum(dP ⊙ P) = rowsum(dP̃ ⊙ P̃) = rowsum(dO ⊙ O)   (softmax Jacobian)
    dQ  = s·dS·K,   dK = s·dSᵀ·Q
P is recomputed from Q, K and the saved L.  Every key/value row belongs to exactly one chunk, so
one program owns its chunk's dK, dV tiles: a single pass over the key tiles writes dK, dV and
accumulates dQ, with no atomics.  The dropout mask Z is regenerated with Philox from
(seed, position), never stored.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._dispatch import (
    SUPPORTED_DTYPES,
    Dispatch,
    choose_path,
    device_check,
    dropout_seed,
    dot_precision,
    dtype_name,
    empty,
    empty_like,
    interpreter_active,
    next_pow2,
    triton_launch,
)

MAX_HEAD_DIM = 256
MAX_CHUNK = 128
LOG2E = 1.4426950408889634


def chunk_pad(ns: int, m: int) -> int:
    """Number of leading tokens that attend to no neighbours: (ns - 1) % m."""
    return (ns - 1) % m


def num_chunks(ns: int, m: int) -> int:
    """l = ceil(ns / m), the number of attending chunks (= neighbour sets) of a sequence."""
    return -(-ns // m)


def neighbours_as_kv(x: torch.Tensor, bs: int, l: int) -> torch.Tensor:
    """View megatron's neighbour layout [r, k·bs·l, h, hd] (dim 1 ordered k, bs, l) as the
    kernel's [bs, l, r·k, h, hd] without copying (the key order inside a chunk is irrelevant)."""
    r, kbl, h, hd = x.shape
    if kbl % (bs * l):
        raise ValueError(f"neighbours_as_kv: dim 1 ({kbl}) is not k·bs·l with bs={bs}, l={l}")
    kk = kbl // (bs * l)
    # [r, k, bs, l, h, hd] -> [bs, l, r, k, h, hd]; (r, k) merge because stride_r = k·stride_k
    return x.view(r, kk, bs, l, h, hd).permute(2, 3, 0, 1, 4, 5).reshape(bs, l, r * kk, h, hd)


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _cca_fwd_kernel(
    Q, K, V, O, LSE,
    NS, H, NK, HD, PAD, qk_scale, p_drop, seed,
    sq_t, sq_b, sq_h, sq_d,
    sk_b, sk_l, sk_n, sk_h, sk_d,
    sv_b, sv_l, sv_n, sv_h, sv_d,
    so_t, so_b, so_h, so_d,
    CHUNK: tl.constexpr, HAS_DROPOUT: tl.constexpr, DOT_FP32: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_c = tl.program_id(0)  # chunk
    pid_bh = tl.program_id(1)  # batch * H + head
    L = tl.num_programs(0)
    b = pid_bh // H
    hh = pid_bh % H
    offs_j = tl.arange(0, BLOCK_M)  # query position inside the chunk
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HD
    t = PAD + pid_c * CHUNK + offs_j  # sequence position of each query row (the RETRO shift)
    valid = (offs_j < CHUNK) & (t < NS)
    q = tl.load(Q + t[:, None] * sq_t + b * sq_b + hh * sq_h + offs_d[None, :] * sq_d,
                mask=valid[:, None] & mask_d[None, :], other=0.0)  # [BM, BD]
    k_base = K + b * sk_b + pid_c * sk_l + hh * sk_h
    v_base = V + b * sv_b + pid_c * sv_l + hh * sv_h
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    row_id = ((b * H + hh) * L + pid_c) * CHUNK + offs_j  # dropout stream position of each row
    for n0 in range(0, NK, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < NK
        kt = tl.load(k_base + offs_n[None, :] * sk_n + offs_d[:, None] * sk_d,
                     mask=mask_n[None, :] & mask_d[:, None], other=0.0)  # [BD, BN]
        v = tl.load(v_base + offs_n[:, None] * sv_n + offs_d[None, :] * sv_d,
                    mask=mask_n[:, None] & mask_d[None, :], other=0.0)  # [BN, BD]
        if DOT_FP32:
            s = tl.dot(q.to(tl.float32), kt.to(tl.float32))
        else:
            s = tl.dot(q, kt, input_precision=PRECISION)
        s = tl.where(mask_n[None, :], s * qk_scale, float("-inf"))  # log2 domain
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])  # [BM, BN]
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if HAS_DROPOUT:
            rnd = tl.rand(seed, row_id[:, None].to(tl.int64) * NK + offs_n[None, :])
            p = tl.where(rnd >= p_drop, p * (1.0 / (1.0 - p_drop)), 0.0)
        if DOT_FP32:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32))
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(O + t[:, None] * so_t + b * so_b + hh * so_h + offs_d[None, :] * so_d,
             acc.to(O.dtype.element_ty), mask=valid[:, None] & mask_d[None, :])
    tl.store(LSE + (pid_bh * L + pid_c) * BLOCK_M + offs_j, m_i + tl.log2(l_i))
    if pid_c == 0:  # rows before the first attending token get no retrieval: zeros
        zero = tl.zeros((BLOCK_M, BLOCK_D), dtype=O.dtype.element_ty)
        tl.store(O + offs_j[:, None] * so_t + b * so_b + hh * so_h + offs_d[None, :] * so_d,
                 zero, mask=(offs_j < PAD)[:, None] & mask_d[None, :])


@triton.jit
def _cca_bwd_kernel(
    Q, K, V, O, DO, LSE, DQ, DK, DV,
    NS, H, NK, HD, PAD, sm_scale, p_drop, seed,
    sq_t, sq_b, sq_h, sq_d,
    sk_b, sk_l, sk_n, sk_h, sk_d,
    sv_b, sv_l, sv_n, sv_h, sv_d,
    so_t, so_b, so_h, so_d,
    sdo_t, sdo_b, sdo_h, sdo_d,
    sdq_t, sdq_b, sdq_h, sdq_d,
    sdk_b, sdk_l, sdk_n, sdk_h, sdk_d,
    sdv_b, sdv_l, sdv_n, sdv_h, sdv_d,
    CHUNK: tl.constexpr, HAS_DROPOUT: tl.constexpr, DOT_FP32: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    L = tl.num_programs(0)
    b = pid_bh // H
    hh = pid_bh % H
    offs_j = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HD
    t = PAD + pid_c * CHUNK + offs_j
    valid = (offs_j < CHUNK) & (t < NS)
    mask_q = valid[:, None] & mask_d[None, :]
    q = tl.load(Q + t[:, None] * sq_t + b * sq_b + hh * sq_h + offs_d[None, :] * sq_d,
                mask=mask_q, other=0.0)  # [BM, BD]
    do = tl.load(DO + t[:, None] * sdo_t + b * sdo_b + hh * sdo_h + offs_d[None, :] * sdo_d,
                 mask=mask_q, other=0.0)  # [BM, BD]
    o = tl.load(O + t[:, None] * so_t + b * so_b + hh * so_h + offs_d[None, :] * so_d,
                mask=mask_q, other=0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)  # D = rowsum(dO ⊙ O)  [BM]
    lse = tl.load(LSE + (pid_bh * L + pid_c) * BLOCK_M + offs_j)  # log2 domain
    qk_scale = sm_scale * 1.4426950408889634
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    row_id = ((b * H + hh) * L + pid_c) * CHUNK + offs_j
    for n0 in range(0, NK, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < NK
        mask_kv = mask_n[:, None] & mask_d[None, :]
        k = tl.load(K + b * sk_b + pid_c * sk_l + hh * sk_h + offs_n[:, None] * sk_n
                    + offs_d[None, :] * sk_d, mask=mask_kv, other=0.0)  # [BN, BD]
        v = tl.load(V + b * sv_b + pid_c * sv_l + hh * sv_h + offs_n[:, None] * sv_n
                    + offs_d[None, :] * sv_d, mask=mask_kv, other=0.0)  # [BN, BD]
        if DOT_FP32:
            s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)))
        else:
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        p = tl.exp2(s * qk_scale - lse[:, None])  # P  [BM, BN]
        p = tl.where(valid[:, None] & mask_n[None, :], p, 0.0)
        if HAS_DROPOUT:
            keep = tl.rand(seed, row_id[:, None].to(tl.int64) * NK + offs_n[None, :]) >= p_drop
            pd = tl.where(keep, p * (1.0 / (1.0 - p_drop)), 0.0)
        else:
            pd = p
        if DOT_FP32:
            dv = tl.dot(tl.trans(pd), do.to(tl.float32))  # [BN, BD]
            dpd = tl.dot(do.to(tl.float32), tl.trans(v.to(tl.float32)))  # [BM, BN]
        else:
            dv = tl.dot(tl.trans(pd.to(do.dtype)), do, input_precision=PRECISION)
            dpd = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        if HAS_DROPOUT:
            dp = tl.where(keep, dpd * (1.0 / (1.0 - p_drop)), 0.0)
        else:
            dp = dpd
        ds = p * (dp - delta[:, None])  # [BM, BN]
        if DOT_FP32:
            dk = tl.dot(tl.trans(ds), q.to(tl.float32)) * sm_scale
            dq += tl.dot(ds, k.to(tl.float32))
        else:
            dk = tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION) * sm_scale
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
        tl.store(DK + b * sdk_b + pid_c * sdk_l + hh * sdk_h + offs_n[:, None] * sdk_n
                 + offs_d[None, :] * sdk_d, dk.to(DK.dtype.element_ty), mask=mask_kv)
        tl.store(DV + b * sdv_b + pid_c * sdv_l + hh * sdv_h + offs_n[:, None] * sdv_n
                 + offs_d[None, :] * sdv_d, dv.to(DV.dtype.element_ty), mask=mask_kv)
    dq = dq * sm_scale
    tl.store(DQ + t[:, None] * sdq_t + b * sdq_b + hh * sdq_h + offs_d[None, :] * sdq_d,
             dq.to(DQ.dtype.element_ty), mask=mask_q)
    if pid_c == 0:  # rows t < pad do not attend: zero gradient
        zero = tl.zeros((BLOCK_M, BLOCK_D), dtype=DQ.dtype.element_ty)
        tl.store(DQ + offs_j[:, None] * sdq_t + b * sdq_b + hh * sdq_h + offs_d[None, :] * sdq_d,
                 zero, mask=(offs_j < PAD)[:, None] & mask_d[None, :])


@triton.jit
def _cca_dropout_mask_kernel(MASK, TOTAL, NK, p_drop, seed, BLOCK: tl.constexpr):
    """Keep-mask [bs, h, l, m, nk] the kernels draw (for tests and the reference)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rnd = tl.rand(seed, (offs // NK).to(tl.int64) * NK + offs % NK)
    tl.store(MASK + offs, rnd >= p_drop, mask=offs < TOTAL)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------
def _blocks(m: int, nk: int, hd: int, dtype: torch.dtype, backward: bool) -> dict:
    """Tile sizes.  GPU choices were checked with gpu_compile_check (sm_80, hd 64): no register
    spills; fp32 (IEEE dots) needs narrower key tiles and 8 warps."""
    bd = next_pow2(hd)
    if interpreter_active():
        return dict(BLOCK_M=next_pow2(m), BLOCK_N=min(next_pow2(nk), 256), BLOCK_D=bd,
                    num_warps=4)
    wide = dtype == torch.float32 or bd > 64
    return dict(BLOCK_M=next_pow2(m), BLOCK_N=32 if wide else 64, BLOCK_D=bd,
                num_warps=8 if (wide or backward) else 4, num_stages=2)


def cca_dropout_mask(bs, h, l, m, nk, p, seed, device) -> torch.Tensor:
    """The attention-dropout keep-mask [bs, l, h, m, nk] (bool) the kernels draw."""
    mask = empty((bs, h, l, m, nk), torch.bool, device)
    total = mask.numel()
    triton_launch(_cca_dropout_mask_kernel, (triton.cdiv(total, 1024),), mask, total, nk,
                  float(p), int(seed), BLOCK=1024)
    return mask.permute(0, 2, 1, 3, 4)


def cca_forward(q, k, v, m, scale, p, seed):
    """Triton forward; returns (out [ns, bs, h, hd], lse [bs·h, l, BLOCK_M] fp32, log2)."""
    ns, bs, h, hd = q.shape
    l, nk = k.shape[1], k.shape[2]
    cfg = _blocks(m, nk, hd, q.dtype, backward=False)
    out = empty((ns, bs, h, hd), q.dtype, q.device)
    lse = empty((bs * h, l, cfg["BLOCK_M"]), torch.float32, q.device)
    triton_launch(
        _cca_fwd_kernel, (l, bs * h),
        q, k, v, out, lse,
        ns, h, nk, hd, chunk_pad(ns, m), scale * LOG2E, float(p), int(seed),
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        CHUNK=m, HAS_DROPOUT=p > 0.0, DOT_FP32=interpreter_active(),
        PRECISION=dot_precision(q.dtype), **cfg,
    )
    return out, lse


def cca_backward(do, q, k, v, out, lse, m, scale, p, seed):
    """Triton backward; returns (dq, dk, dv) shaped (and, for dk/dv, strided) like q, k, v."""
    ns, bs, h, hd = q.shape
    l, nk = k.shape[1], k.shape[2]
    cfg = _blocks(m, nk, hd, q.dtype, backward=True)
    dq = empty((ns, bs, h, hd), q.dtype, q.device)
    dk, dv = empty_like(k), empty_like(v)
    triton_launch(
        _cca_bwd_kernel, (l, bs * h),
        q, k, v, out, do, lse, dq, dk, dv,
        ns, h, nk, hd, chunk_pad(ns, m), float(scale), float(p), int(seed),
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *do.stride(), *dq.stride(),
        *dk.stride(), *dv.stride(),
        CHUNK=m, HAS_DROPOUT=p > 0.0, DOT_FP32=interpreter_active(),
        PRECISION=dot_precision(q.dtype), **cfg,
    )
    return dq, dk, dv


class ChunkedCrossAttentionFunction(torch.autograd.Function):
    """autograd.Function around the Triton forward/backward kernels."""

    @staticmethod
    def forward(ctx, q, k, v, chunk_length, scale, dropout_p, seed):
        out, lse = cca_forward(q, k, v, chunk_length, scale, dropout_p, seed)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (chunk_length, scale, dropout_p, seed)
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = cca_backward(do, q, k, v, out, lse, *ctx.args)
        return dq, dk, dv, None, None, None, None


# --------------------------------------------------------------------------------------------
# Reference, checks, dispatch
# --------------------------------------------------------------------------------------------
def chunked_cross_attention_reference(q, k, v, chunk_length=64, softmax_scale=None,
                                      dropout_p=0.0, keep_mask=None, impl="sdpa"):
    """Plain-torch CCA with megatron's pad/permute formulation (same shapes as the kernel).

    impl="sdpa" uses torch's scaled_dot_product_attention, "math" materialises the scores
    (softmax in fp32 for half inputs).  `keep_mask` [bs, l, h, m, nk] (bool) replaces torch's
    own dropout draw (tests pass the kernels' mask; it implies impl="math").
    """
    ns, bs, h, hd = q.shape
    m = chunk_length
    l = k.shape[1]
    pad = chunk_pad(ns, m)
    scale = 1.0 / math.sqrt(hd) if softmax_scale is None else softmax_scale
    # shift left by pad, pad the tail: [l·m, bs, h, hd] -> per-chunk queries [bs, l, h, m, hd]
    qs = torch.nn.functional.pad(q[pad:], (0, 0, 0, 0, 0, 0, 0, m - 1))
    qs = qs.reshape(l, m, bs, h, hd).permute(2, 0, 3, 1, 4)
    if k.shape[3] != h:  # grouped-query attention: each kv head serves h / h_kv query heads
        k = k.repeat_interleave(h // k.shape[3], dim=3)
        v = v.repeat_interleave(h // v.shape[3], dim=3)
    kk = k.permute(0, 1, 3, 2, 4)  # [bs, l, h, nk, hd]
    vv = v.permute(0, 1, 3, 2, 4)
    if impl == "sdpa" and keep_mask is None:
        o = torch.nn.functional.scaled_dot_product_attention(
            qs, kk, vv, dropout_p=dropout_p, scale=scale)  # [bs, l, h, m, hd]
    else:
        s = (qs @ kk.transpose(-1, -2)) * scale  # [bs, l, h, m, nk]
        half = s.dtype in (torch.float16, torch.bfloat16)
        pr = torch.softmax(s, -1, dtype=torch.float32 if half else s.dtype).to(s.dtype)
        if dropout_p > 0.0:
            if keep_mask is not None:
                pr = pr * keep_mask.to(pr.dtype) / (1.0 - dropout_p)
            else:
                pr = torch.nn.functional.dropout(pr, dropout_p, training=True)
        o = pr @ vv
    o = o.permute(1, 3, 0, 2, 4).reshape(l * m, bs, h, hd)  # back to sequence order
    return torch.cat([o.new_zeros(pad, bs, h, hd), o], 0)[:ns]


def _validate(q, k, v, chunk_length, dropout_p) -> None:
    if q.dim() != 4 or k.dim() != 5 or v.dim() != 5:
        raise ValueError(f"chunked_cross_attention: q must be [ns, bs, h, hd] and k, v "
                         f"[bs, l, nk, h, hd]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    ns, bs, h, hd = q.shape
    if chunk_length < 1:
        raise ValueError(f"chunked_cross_attention: chunk_length must be >= 1, got {chunk_length}")
    l = num_chunks(ns, chunk_length)
    h_kv = k.shape[3]
    want = (bs, l, k.shape[2], h_kv, hd)
    if tuple(k.shape) != want or tuple(v.shape) != want or h_kv < 1 or h % h_kv:
        raise ValueError(f"chunked_cross_attention: with q {tuple(q.shape)} and chunk_length "
                         f"{chunk_length} (l={l}), k and v must be [bs={bs}, l={l}, nk, h_kv, "
                         f"hd={hd}] with h_kv dividing h={h}; got {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if k.shape[2] < 1:
        raise ValueError("chunked_cross_attention: no neighbour tokens (nk = 0)")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"chunked_cross_attention: q, k, v dtypes differ ({dtype_name(q.dtype)}, "
                         f"{dtype_name(k.dtype)}, {dtype_name(v.dtype)})")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"chunked_cross_attention: dropout_p must be in [0, 1), got {dropout_p}")


def chunked_cross_attention_can_use_triton(q, k, v, chunk_length=64) -> Dispatch:
    """Whether the Triton kernels support these inputs (ignoring the auto CPU rule), and why."""
    dev = device_check(_cca_fwd_kernel, q, k, v)
    if not dev.use_triton:
        return dev
    if q.dtype not in SUPPORTED_DTYPES:
        return Dispatch(False, f"dtype {dtype_name(q.dtype)} not in fp32/fp16/bf16")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        return Dispatch(False, f"q, k, v dtypes differ ({dtype_name(q.dtype)}, "
                               f"{dtype_name(k.dtype)}, {dtype_name(v.dtype)})")
    if q.shape[-1] > MAX_HEAD_DIM:
        return Dispatch(False, f"head dim {q.shape[-1]} > {MAX_HEAD_DIM}")
    if k.shape[3] != q.shape[2]:
        return Dispatch(False, f"grouped-query attention ({q.shape[2]} query heads, {k.shape[3]} "
                               f"key/value heads) is not implemented in the kernel")
    if chunk_length > MAX_CHUNK:
        return Dispatch(False, f"chunk length {chunk_length} > {MAX_CHUNK} (one query block)")
    if q.numel() == 0:
        return Dispatch(False, "empty input")
    return Dispatch(True, f"{dev.reason}, {dtype_name(q.dtype)}, hd {q.shape[-1]}: "
                          f"Triton flash CCA kernels")


def chunked_cross_attention_dispatch(q, k, v, chunk_length=64, dropout_p=0.0,
                                     backend="auto") -> Dispatch:
    """The path `chunked_cross_attention` takes for these arguments and why."""
    _validate(q, k, v, chunk_length, dropout_p)
    check = chunked_cross_attention_can_use_triton(q, k, v, chunk_length)
    return choose_path(backend, q.device, check, "chunked_cross_attention")


def chunked_cross_attention(q, k, v, chunk_length=64, softmax_scale=None, dropout_p=0.0,
                            backend="auto"):
    """RETRO chunked cross-attention, autograd-aware (see the module docstring for semantics).

    q [ns, bs, h, hd]; k, v [bs, l, nk, h, hd] with l = ceil(ns / chunk_length), nk = k·r;
    returns [ns, bs, h, hd] (rows t < (ns-1) % chunk_length are zero).  softmax_scale defaults
    to 1/sqrt(hd); dropout_p is attention dropout, applied as given (0.0 in eval).
    `backend`: "auto" | "triton" | "torch"; `chunked_cross_attention_dispatch` says which.
    """
    path = chunked_cross_attention_dispatch(q, k, v, chunk_length, dropout_p, backend)
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    if not path.use_triton:
        return chunked_cross_attention_reference(q, k, v, chunk_length, scale, dropout_p)
    # from q's device generator: the caller's RNG-tracker fork decides it (_dispatch.dropout_seed)
    seed = dropout_seed(q.device) if dropout_p > 0.0 else 0
    return ChunkedCrossAttentionFunction.apply(q, k, v, int(chunk_length), scale,
                                               float(dropout_p), seed)
