"""Fused LoRA linear: Y = X·Wᵀ + s·(drop(X)·Aᵀ)·Bᵀ (+ bias), Triton kernels + torch reference.

Notation (2-D after flattening the leading dims of x):
    M  tokens (all leading dims of x),  K  input features,  N  output features,  R  LoRA rank
    X [M, K] activations, W [N, K] frozen base weight, A [R, K] (lora_a), B [N, R] (lora_b),
    s  LoRA scale (alpha / r),  p  LoRA dropout probability,  D = mask / (1 - p)  ([M, K])
    Xd = X ⊙ D (dropped input; Xd = X when p = 0),  H = Xd·Aᵀ  [M, R]

Forward (one kernel; program = BM rows × a group of G output column tiles): for its first
column tile a program streams its X row tile along K once and feeds each loaded X tile to two
dot products, X·Wᵀ into a [BM, BN] accumulator and Xd·Aᵀ into a [BM, R] accumulator, then adds
s·H·Bᵀ and the bias in the epilogue; its other G-1 column tiles are plain GEMM tiles whose
epilogues reuse H from registers.  So the LoRA path never re-reads X and never writes or re-reads
an [M, N] intermediate (the torch chain writes X·Wᵀ and the LoRA term and reads both back).  H is
computed once per group: redundant FLOPs are R/(BN·G) of the base GEMM; G is chosen for ~4
programs per SM (`column_group`).  Group-0 programs store H (fp32, [M, R]) for the backward.

Backward (W frozen: no dW).  With dY [M, N]:
    Y   = X·Wᵀ + s·H·Bᵀ,   H = Xd·Aᵀ,   Xd = X ⊙ D
    dH  = s·dY·B                              [M, R]   (∂Y/∂H = s·Bᵀ)
    dB  = s·dYᵀ·H                             [N, R]
    dA  = dHᵀ·Xd                              [R, K]
    dX  = dY·W + (dH·A) ⊙ D                   [M, K]   (base path + LoRA path through Xd)
    dbias = Σ_m dY                            [N]      (only if bias requires grad)
Kernel 1 (same grouped structure over [M, K] tiles) feeds each dY tile of its first column
tile to dY·W and dY·B, and adds (s·dY·B)·A ⊙ D in every tile's epilogue; group-0 programs
store dH.  Kernels 2 and 3 reduce over M (split in SPLIT_M slices, fp32 partials summed by
torch) for dA and dB.  The dropout mask is never
stored: both passes regenerate it with Philox from (seed, m·K + k).

Precision: X and W share a dtype (fp32, fp16, bf16); A and B may be fp32 (adapters kept in fp32)
and are rounded to X's dtype inside the kernel, as the reference does; accumulation is fp32;
dA, dB come back in the dtypes of A and B.

Tensor parallelism (one rule, see DESIGN.md): the op is shape-generic, so a column-parallel shard
calls it with W [N/tp, K], A [R, K] (replicated), B [N/tp, R], bias shard; a row-parallel shard
with X [M, K/tp], W [N, K/tp], A [R, K/tp], B [N, R] (replicated) and bias=None (the bias is added
after the all-reduce that sums the partial outputs, LoRA term included).  The gradients this op
returns are per shard; the caller reduces the replicated adapter's: column-parallel dA is a
partial sum over the output shards (all-reduce it over the TP group), row-parallel dB a partial
sum over the input shards (likewise); with sequence parallelism also over the sequence shards.
"""
from __future__ import annotations

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
    interpreter_active,
    triton_launch,
)
from .lora_tiles import column_group, lora_blocks
from .lora_torch import lora_linear_torch

MAX_RANK = 128  # larger ranks would not fit the [BM, R] accumulators in registers


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _fwd_epilogue(acc, h_c, B, BIAS, Y, offs_m, mask_m, n_tile, N, R, scale, sbn, sbr, sym, syn,
                  HAS_BIAS: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
    """Y tile = acc + s·H·Bᵀ (+ bias), stored in Y's dtype."""
    offs_n = n_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    mask_n = offs_n < N
    b = tl.load(B + offs_n[None, :] * sbn + offs_r[:, None] * sbr,
                mask=mask_n[None, :] & (offs_r < R)[:, None], other=0.0)  # [BR, BN] = Bᵀ tile
    b = b.to(Y.dtype.element_ty)  # the LoRA path runs in the activation dtype
    if DOT_FP32:  # interpreter: bf16 tl.dot is broken there
        lora = tl.dot(h_c.to(tl.float32), b.to(tl.float32))
    else:
        lora = tl.dot(h_c, b, input_precision=PRECISION)
    acc += scale * lora
    if HAS_BIAS:
        acc += tl.load(BIAS + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + offs_m[:, None] * sym + offs_n[None, :] * syn, acc.to(Y.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _lora_fwd_kernel(
    X, W, A, B, BIAS, Y, H,
    M, N, K, R, scale, p_drop, seed, GROUP,
    sxm, sxk, swn, swk, sar, sak, sbn, sbr, sym, syn,
    HAS_BIAS: tl.constexpr, HAS_DROPOUT: tl.constexpr, DOT_FP32: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """Program (pid_m, pid_g): rows pid_m·BM.., output column tiles pid_g·GROUP .. +GROUP-1."""
    pid_m = tl.program_id(0)
    pid_g = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    offs_r = tl.arange(0, BLOCK_R)  # [BR]
    mask_m = offs_m < M
    mask_r = offs_r < R
    n_first = pid_g * GROUP
    n_end = tl.minimum(n_first + GROUP, tl.cdiv(N, BLOCK_N))
    # first column tile: each X tile feeds both X·Wᵀ and Xd·Aᵀ
    offs_n = n_first * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # X·Wᵀ
    h = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)  # Xd·Aᵀ
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(X + offs_m[:, None] * sxm + offs_k[None, :] * sxk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)  # [BM, BK]
        w = tl.load(W + offs_n[None, :] * swn + offs_k[:, None] * swk,
                    mask=mask_n[None, :] & mask_k[:, None], other=0.0)  # [BK, BN] = Wᵀ tile
        a = tl.load(A + offs_r[None, :] * sar + offs_k[:, None] * sak,
                    mask=mask_r[None, :] & mask_k[:, None], other=0.0).to(x.dtype)  # [BK, BR]
        if HAS_DROPOUT:
            rnd = tl.rand(seed, offs_m[:, None].to(tl.int64) * K + offs_k[None, :])
            xd = tl.where(rnd >= p_drop, x, 0.0).to(x.dtype)
        else:
            xd = x
        if DOT_FP32:
            acc = tl.dot(x.to(tl.float32), w.to(tl.float32), acc)
            h = tl.dot(xd.to(tl.float32), a.to(tl.float32), h)
        else:
            acc = tl.dot(x, w, acc, input_precision=PRECISION)
            h = tl.dot(xd, a, h, input_precision=PRECISION)
    if HAS_DROPOUT:
        h = h * (1.0 / (1.0 - p_drop))
    if pid_g == 0:
        tl.store(H + offs_m[:, None] * BLOCK_R + offs_r[None, :], h, mask=mask_m[:, None])
    h_c = h.to(Y.dtype.element_ty)
    _fwd_epilogue(acc, h_c, B, BIAS, Y, offs_m, mask_m, n_first, N, R, scale, sbn, sbr, sym,
                  syn, HAS_BIAS, DOT_FP32, PRECISION, BLOCK_N, BLOCK_R)
    # further column tiles of the group: plain GEMM tiles reusing H
    for n_tile in range(n_first + 1, n_end):
        offs_n = n_tile * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            x = tl.load(X + offs_m[:, None] * sxm + offs_k[None, :] * sxk,
                        mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            w = tl.load(W + offs_n[None, :] * swn + offs_k[:, None] * swk,
                        mask=mask_n[None, :] & mask_k[:, None], other=0.0)
            if DOT_FP32:
                acc = tl.dot(x.to(tl.float32), w.to(tl.float32), acc)
            else:
                acc = tl.dot(x, w, acc, input_precision=PRECISION)
        _fwd_epilogue(acc, h_c, B, BIAS, Y, offs_m, mask_m, n_tile, N, R, scale, sbn, sbr, sym,
                      syn, HAS_BIAS, DOT_FP32, PRECISION, BLOCK_N, BLOCK_R)


@triton.jit
def _dx_epilogue(acc, dh_c, A, DX, offs_m, mask_m, k_tile, K, R, p_drop, seed, sar, sak,
                 sdxm, sdxk, HAS_DROPOUT: tl.constexpr, DOT_FP32: tl.constexpr,
                 PRECISION: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr):
    """dX tile = acc + (dH·A) ⊙ D, stored in dX's dtype."""
    offs_k = k_tile * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, BLOCK_R)
    mask_k = offs_k < K
    a = tl.load(A + offs_r[:, None] * sar + offs_k[None, :] * sak,
                mask=(offs_r < R)[:, None] & mask_k[None, :], other=0.0)  # [BR, BK]
    a = a.to(DX.dtype.element_ty)
    if DOT_FP32:
        lora = tl.dot(dh_c.to(tl.float32), a.to(tl.float32))
    else:
        lora = tl.dot(dh_c, a, input_precision=PRECISION)
    if HAS_DROPOUT:
        rnd = tl.rand(seed, offs_m[:, None].to(tl.int64) * K + offs_k[None, :])
        lora = tl.where(rnd >= p_drop, lora * (1.0 / (1.0 - p_drop)), 0.0)
    acc += lora
    tl.store(DX + offs_m[:, None] * sdxm + offs_k[None, :] * sdxk, acc.to(DX.dtype.element_ty),
             mask=mask_m[:, None] & mask_k[None, :])


@triton.jit
def _lora_bwd_dx_kernel(
    DY, W, A, B, DX, DH,
    M, N, K, R, scale, p_drop, seed, GROUP,
    sdym, sdyn, swn, swk, sar, sak, sbn, sbr, sdxm, sdxk,
    HAS_DROPOUT: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """Program (pid_m, pid_g): rows pid_m·BM.., input column tiles pid_g·GROUP .. +GROUP-1."""
    pid_m = tl.program_id(0)
    pid_g = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, BLOCK_R)
    mask_m = offs_m < M
    mask_r = offs_r < R
    k_first = pid_g * GROUP
    k_end = tl.minimum(k_first + GROUP, tl.cdiv(K, BLOCK_K))
    # first column tile: each dY tile feeds both dY·W and dY·B
    offs_k = k_first * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)  # dY·W
    dh = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)  # dY·B
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        dy = tl.load(DY + offs_m[:, None] * sdym + offs_n[None, :] * sdyn,
                     mask=mask_m[:, None] & mask_n[None, :], other=0.0)  # [BM, BN]
        w = tl.load(W + offs_n[:, None] * swn + offs_k[None, :] * swk,
                    mask=mask_n[:, None] & mask_k[None, :], other=0.0)  # [BN, BK]
        b = tl.load(B + offs_n[:, None] * sbn + offs_r[None, :] * sbr,
                    mask=mask_n[:, None] & mask_r[None, :], other=0.0).to(dy.dtype)  # [BN, BR]
        if DOT_FP32:
            acc = tl.dot(dy.to(tl.float32), w.to(tl.float32), acc)
            dh = tl.dot(dy.to(tl.float32), b.to(tl.float32), dh)
        else:
            acc = tl.dot(dy, w, acc, input_precision=PRECISION)
            dh = tl.dot(dy, b, dh, input_precision=PRECISION)
    dh = dh * scale
    if pid_g == 0:
        tl.store(DH + offs_m[:, None] * BLOCK_R + offs_r[None, :], dh, mask=mask_m[:, None])
    dh_c = dh.to(DX.dtype.element_ty)
    _dx_epilogue(acc, dh_c, A, DX, offs_m, mask_m, k_first, K, R, p_drop, seed, sar, sak, sdxm,
                 sdxk, HAS_DROPOUT, DOT_FP32, PRECISION, BLOCK_K, BLOCK_R)
    # further column tiles of the group: plain GEMM tiles reusing dH
    for k_tile in range(k_first + 1, k_end):
        offs_k = k_tile * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        for n0 in range(0, N, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_n = offs_n < N
            dy = tl.load(DY + offs_m[:, None] * sdym + offs_n[None, :] * sdyn,
                         mask=mask_m[:, None] & mask_n[None, :], other=0.0)
            w = tl.load(W + offs_n[:, None] * swn + offs_k[None, :] * swk,
                        mask=mask_n[:, None] & mask_k[None, :], other=0.0)
            if DOT_FP32:
                acc = tl.dot(dy.to(tl.float32), w.to(tl.float32), acc)
            else:
                acc = tl.dot(dy, w, acc, input_precision=PRECISION)
        _dx_epilogue(acc, dh_c, A, DX, offs_m, mask_m, k_tile, K, R, p_drop, seed, sar, sak,
                     sdxm, sdxk, HAS_DROPOUT, DOT_FP32, PRECISION, BLOCK_K, BLOCK_R)


@triton.jit
def _lora_bwd_da_kernel(
    X, DH, DA_PART,
    M, K, R, p_drop, seed, rows_per_split,
    sxm, sxk,
    HAS_DROPOUT: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """DA_PART[s] = dH[rows of split s]ᵀ · Xd[rows of split s]   ([SPLIT, BR, K] fp32)."""
    pid_k = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, BLOCK_R)
    mask_k = offs_k < K
    acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    m_start = pid_s * rows_per_split
    m_end = tl.minimum(m_start + rows_per_split, M)
    for m0 in range(m_start, m_end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < m_end
        x = tl.load(X + offs_m[:, None] * sxm + offs_k[None, :] * sxk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)  # [BM, BK]
        if HAS_DROPOUT:
            rnd = tl.rand(seed, offs_m[:, None].to(tl.int64) * K + offs_k[None, :])
            x = tl.where(rnd >= p_drop, x, 0.0).to(x.dtype)
        dh = tl.load(DH + offs_r[:, None] + offs_m[None, :] * BLOCK_R,
                     mask=mask_m[None, :], other=0.0)  # [BR, BM] = dHᵀ tile
        if DOT_FP32:
            acc = tl.dot(dh.to(x.dtype).to(tl.float32), x.to(tl.float32), acc)
        else:
            acc = tl.dot(dh.to(x.dtype), x, acc, input_precision=PRECISION)
    if HAS_DROPOUT:
        acc = acc * (1.0 / (1.0 - p_drop))
    tl.store(DA_PART + pid_s * BLOCK_R * K + offs_r[:, None] * K + offs_k[None, :], acc,
             mask=mask_k[None, :])


@triton.jit
def _lora_bwd_db_kernel(
    DY, H, DB_PART,
    M, N, scale, rows_per_split,
    sdym, sdyn,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """DB_PART[s] = s·dY[rows of split s]ᵀ · H[rows of split s]   ([SPLIT, N, BR] fp32)."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    m_start = pid_s * rows_per_split
    m_end = tl.minimum(m_start + rows_per_split, M)
    for m0 in range(m_start, m_end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < m_end
        dy = tl.load(DY + offs_m[None, :] * sdym + offs_n[:, None] * sdyn,
                     mask=mask_m[None, :] & mask_n[:, None], other=0.0)  # [BN, BM] = dYᵀ tile
        h = tl.load(H + offs_m[:, None] * BLOCK_R + offs_r[None, :],
                    mask=mask_m[:, None], other=0.0)  # [BM, BR]
        if DOT_FP32:
            acc = tl.dot(dy.to(tl.float32), h.to(dy.dtype).to(tl.float32), acc)
        else:
            acc = tl.dot(dy, h.to(dy.dtype), acc, input_precision=PRECISION)
    tl.store(DB_PART + pid_s * N * BLOCK_R + offs_n[:, None] * BLOCK_R + offs_r[None, :],
             acc * scale, mask=mask_n[:, None])


@triton.jit
def _dropout_mask_kernel(MASK, M, K, p_drop, seed, BLOCK: tl.constexpr):
    """The keep-mask the kernels above use (for tests and the reference): MASK [M, K] bool."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs // K
    k = offs % K
    rnd = tl.rand(seed, m.to(tl.int64) * K + k)
    tl.store(MASK + offs, rnd >= p_drop, mask=offs < M * K)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------
def _split_m(M: int, block_m: int, other_programs: int) -> tuple[int, int]:
    """Split the M reduction of dA/dB so the grid has enough programs; -> (splits, rows each)."""
    tiles = triton.cdiv(M, block_m)
    want = 1 if interpreter_active() else max(1, min(tiles, 256 // max(1, other_programs)))
    per = triton.cdiv(tiles, want) * block_m
    return triton.cdiv(M, per), per


def lora_dropout_mask(shape_mk: tuple[int, int], p: float, seed: int, device) -> torch.Tensor:
    """Keep-mask [M, K] (bool) the Triton kernels draw for dropout `p` and `seed`."""
    M, K = shape_mk
    mask = empty((M, K), torch.bool, device)
    block = 1024
    triton_launch(_dropout_mask_kernel, (triton.cdiv(M * K, block),), mask, M, K, float(p),
                  int(seed), BLOCK=block)
    return mask


def fused_lora_forward(x2, weight, lora_a, lora_b, scale, bias, p, seed, group=None):
    """Triton forward on 2-D x2 [M, K]; returns (y [M, N], h [M, BR] fp32).
    `group`: output column tiles per program (default: `column_group`)."""
    M, K = x2.shape
    N, R = weight.shape[0], lora_a.shape[0]
    cfg = lora_blocks(M, N, K, R, x2.dtype, "fwd")
    y = empty((M, N), x2.dtype, x2.device)
    h = empty((M, cfg["BLOCK_R"]), torch.float32, x2.device)
    rows, cols = triton.cdiv(M, cfg["BLOCK_M"]), triton.cdiv(N, cfg["BLOCK_N"])
    g = column_group(rows, cols, x2.device, group)
    triton_launch(
        _lora_fwd_kernel, (rows, triton.cdiv(cols, g)),
        x2, weight, lora_a, lora_b, bias if bias is not None else y, y, h,
        M, N, K, R, float(scale), float(p), int(seed), g,
        x2.stride(0), x2.stride(1), weight.stride(0), weight.stride(1),
        lora_a.stride(0), lora_a.stride(1), lora_b.stride(0), lora_b.stride(1),
        y.stride(0), y.stride(1),
        HAS_BIAS=bias is not None, HAS_DROPOUT=p > 0.0, DOT_FP32=interpreter_active(),
        PRECISION=dot_precision(x2.dtype), **cfg,
    )
    return y, h


def fused_lora_backward(dy, x2, weight, lora_a, lora_b, h, scale, p, seed, need_da, need_db,
                        group=None):
    """Triton backward; returns (dx [M, K], da [R, K] | None, db [N, R] | None).
    `group`: dX column tiles per program (default: `column_group`)."""
    M, K = x2.shape
    N, R = weight.shape[0], lora_a.shape[0]
    dtype = x2.dtype
    cfg = lora_blocks(M, N, K, R, dtype, "dx")
    br = cfg["BLOCK_R"]
    common = dict(DOT_FP32=interpreter_active(), PRECISION=dot_precision(dtype))
    dx = empty((M, K), dtype, x2.device)
    dh = empty((M, br), torch.float32, x2.device)
    # Kernel 1 tiles [M, K] and streams dY along N: dY·W and dY·B from one read of dY.
    rows, cols = triton.cdiv(M, cfg["BLOCK_M"]), triton.cdiv(K, cfg["BLOCK_K"])
    g = column_group(rows, cols, x2.device, group)
    triton_launch(
        _lora_bwd_dx_kernel, (rows, triton.cdiv(cols, g)),
        dy, weight, lora_a, lora_b, dx, dh,
        M, N, K, R, float(scale), float(p), int(seed), g,
        dy.stride(0), dy.stride(1), weight.stride(0), weight.stride(1),
        lora_a.stride(0), lora_a.stride(1), lora_b.stride(0), lora_b.stride(1),
        dx.stride(0), dx.stride(1),
        HAS_DROPOUT=p > 0.0, **common, **cfg,
    )
    da = db = None
    if need_da:
        cfg = lora_blocks(M, N, K, R, dtype, "da")
        cfg.pop("BLOCK_N", None)
        splits, per = _split_m(M, cfg["BLOCK_M"], triton.cdiv(K, cfg["BLOCK_K"]))
        part = empty((splits, br, K), torch.float32, x2.device)
        triton_launch(
            _lora_bwd_da_kernel, (triton.cdiv(K, cfg["BLOCK_K"]), splits),
            x2, dh, part, M, K, R, float(p), int(seed), per, x2.stride(0), x2.stride(1),
            HAS_DROPOUT=p > 0.0, **common, **cfg,
        )
        da = part.sum(0)[:R].to(lora_a.dtype)
    if need_db:
        cfg = lora_blocks(M, N, K, R, dtype, "db")
        cfg.pop("BLOCK_K", None)
        splits, per = _split_m(M, cfg["BLOCK_M"], triton.cdiv(N, cfg["BLOCK_N"]))
        part = empty((splits, N, br), torch.float32, x2.device)
        triton_launch(
            _lora_bwd_db_kernel, (triton.cdiv(N, cfg["BLOCK_N"]), splits),
            dy, h, part, M, N, float(scale), per, dy.stride(0), dy.stride(1),
            **common, **cfg,
        )
        db = part.sum(0)[:, :R].to(lora_b.dtype)
    return dx, da, db


class FusedLoRALinearFunction(torch.autograd.Function):
    """autograd.Function around the Triton kernels (x, lora_a, lora_b, bias get gradients)."""

    @staticmethod
    def forward(ctx, x, weight, lora_a, lora_b, bias, scale, dropout_p, seed):
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])  # [M, K]
        y, h = fused_lora_forward(x2, weight, lora_a, lora_b, scale, bias, dropout_p, seed)
        ctx.save_for_backward(x2, weight, lora_a, lora_b, h)
        ctx.scale, ctx.p, ctx.seed, ctx.lead = scale, dropout_p, seed, lead
        ctx.has_bias = bias is not None
        return y.view(*lead, weight.shape[0])

    @staticmethod
    def backward(ctx, dy):
        x2, weight, lora_a, lora_b, h = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1])  # [M, N]
        need_da, need_db = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        dx, da, db = fused_lora_backward(dy2, x2, weight, lora_a, lora_b, h, ctx.scale, ctx.p,
                                         ctx.seed, need_da, need_db)
        dbias = dy2.sum(0) if ctx.has_bias and ctx.needs_input_grad[4] else None
        dx = dx.view(*ctx.lead, x2.shape[1]) if ctx.needs_input_grad[0] else None
        return dx, None, da, db, dbias, None, None, None


# --------------------------------------------------------------------------------------------
# Reference, checks, dispatch
# --------------------------------------------------------------------------------------------
def fused_lora_reference(x, weight, lora_a, lora_b, scale, bias=None, dropout_p=0.0,
                         keep_mask=None):
    """Plain-torch LoRA linear (autograd through torch); the LoRA path runs in x's dtype.

    `keep_mask` ([..., K] bool) replaces torch's own dropout draw (tests pass the kernels' mask).
    """
    a = lora_a.to(x.dtype)
    b = lora_b.to(x.dtype)
    if dropout_p > 0.0:
        if keep_mask is not None:
            xd = x * keep_mask.reshape(x.shape).to(x.dtype) / (1.0 - dropout_p)
        else:
            xd = torch.nn.functional.dropout(x, dropout_p, training=True)
    else:
        xd = x
    bias = None if bias is None else bias.to(x.dtype)
    y = torch.nn.functional.linear(x, weight.to(x.dtype), bias)
    return y + scale * ((xd @ a.t()) @ b.t())


def _validate(x, weight, lora_a, lora_b, bias, dropout_p) -> None:
    """Shape errors are caller bugs on every path: raise with the offending shapes."""
    if weight.dim() != 2 or lora_a.dim() != 2 or lora_b.dim() != 2:
        raise ValueError(f"fused_lora_linear: weight, lora_a, lora_b must be 2-D, got "
                         f"{tuple(weight.shape)}, {tuple(lora_a.shape)}, {tuple(lora_b.shape)}")
    n, k = weight.shape
    r = lora_a.shape[0]
    if x.shape[-1] != k or lora_a.shape[1] != k:
        raise ValueError(f"fused_lora_linear: in-features mismatch: x[..., {x.shape[-1]}], "
                         f"weight [{n}, {k}], lora_a [{r}, {lora_a.shape[1]}]")
    if tuple(lora_b.shape) != (n, r):
        raise ValueError(f"fused_lora_linear: lora_b must be [out={n}, r={r}], "
                         f"got {tuple(lora_b.shape)}")
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"fused_lora_linear: bias must be [{n}], got {tuple(bias.shape)}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"fused_lora_linear: dropout_p must be in [0, 1), got {dropout_p}")


def fused_lora_can_use_triton(x, weight, lora_a, lora_b, bias=None, dropout_p=0.0) -> Dispatch:
    """Whether the Triton kernels support these inputs (ignoring the auto CPU rule), and why."""
    dev = device_check(_lora_fwd_kernel, x, weight, lora_a, lora_b, bias)
    if not dev.use_triton:
        return dev
    if x.dtype not in SUPPORTED_DTYPES:
        return Dispatch(False, f"input dtype {dtype_name(x.dtype)} not in fp32/fp16/bf16")
    if weight.dtype != x.dtype:
        return Dispatch(False, f"weight dtype {dtype_name(weight.dtype)} != input dtype "
                               f"{dtype_name(x.dtype)}")
    for name, t in (("lora_a", lora_a), ("lora_b", lora_b), ("bias", bias)):
        if t is not None and t.dtype not in SUPPORTED_DTYPES:
            return Dispatch(False, f"{name} dtype {dtype_name(t.dtype)} not in fp32/fp16/bf16")
    if weight.requires_grad:
        return Dispatch(False, "the base weight requires grad; the fused kernels compute no dW")
    r = lora_a.shape[0]
    if r > MAX_RANK:
        return Dispatch(False, f"LoRA rank {r} > {MAX_RANK} (accumulators would spill)")
    if x.numel() == 0:
        return Dispatch(False, "empty input")
    return Dispatch(True, f"{dev.reason}, {dtype_name(x.dtype)}, rank {r}: Triton fused kernels")


def fused_lora_dispatch(x, weight, lora_a, lora_b, bias=None, dropout_p=0.0,
                        backend="auto") -> Dispatch:
    """The path `fused_lora_linear` takes for these arguments and why (raises on bad shapes)."""
    _validate(x, weight, lora_a, lora_b, bias, dropout_p)
    check = fused_lora_can_use_triton(x, weight, lora_a, lora_b, bias, dropout_p)
    if backend == "auto":
        from .lora_floor import env_backend

        backend = env_backend()   # MEGATRON_RETRO_FUSED_LORA: a process-wide override of "auto"
    path = choose_path(backend, x.device, check, "fused_lora_linear")
    if backend == "auto" and path.use_triton:   # supported on CUDA: the floor model decides
        from .lora_floor import shape_rule

        training = torch.is_grad_enabled() and any(t.requires_grad for t in (x, lora_a, lora_b))
        return shape_rule(x.numel() // x.shape[-1], x.shape[-1], weight.shape[0], lora_a.shape[0],
                          x.dtype, training, x.device)
    return path


def fused_lora_linear(x, weight, lora_a, lora_b, scale, bias=None, dropout_p=0.0,
                      backend="auto"):
    """LoRA linear y = x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ (+ bias), autograd-aware.

    x [..., in], weight [out, in] (frozen), lora_a [r, in], lora_b [out, r], bias [out] or None;
    returns [..., out] in x's dtype.  `dropout_p` is applied as given (pass 0.0 in eval mode).
    `backend`: "auto" (Triton on CUDA when supported, else the torch reference), "triton",
    "torch"; `fused_lora_dispatch(...)` tells which path these arguments take and why.
    """
    path = fused_lora_dispatch(x, weight, lora_a, lora_b, bias, dropout_p, backend)
    if not path.use_triton:
        if dropout_p == 0.0:   # same maths, no [M, N] intermediates (lora_torch.py)
            return lora_linear_torch(x, weight, lora_a, lora_b, scale, bias)
        return fused_lora_reference(x, weight, lora_a, lora_b, scale, bias, dropout_p)
    # from x's device generator: the caller's RNG-tracker fork decides it (_dispatch.dropout_seed)
    seed = dropout_seed(x.device) if dropout_p > 0.0 else 0
    return FusedLoRALinearFunction.apply(x, weight, lora_a, lora_b, bias, float(scale),
                                         float(dropout_p), seed)
