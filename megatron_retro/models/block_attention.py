"""Causal (optionally sliding-window) attention as blocks of large GEMMs, for grouped queries on CPU.

Notation: b micro-batch, s sequence (queries = keys), ng key/value groups, hpg query heads per
group, hn head width, B = b·ng, c query positions per block, L keys a block sees, σ the scale.

torch's fused CPU attention (``scaled_dot_product_attention``) handles each query head against
its key head in small tiles; with one key head for four query heads (Gemma 3 270M) the four heads
of a group read the same keys.  Here the queries of a group are stored position-major,
q [B, s, hpg, hn], so the hpg·c query rows of c consecutive positions form one [hpg·c, hn]
matrix, and each block is one batched GEMM against only the keys it may see:

    keys of block [p0, p1):  [k0, p1),  k0 = 0 (causal) or max(0, p0 - window) (sliding window)
    forward    S = σ·Q_blk·K_[k0,p1)ᵀ  (masked: key > query, or query - key > window)
               P = softmax(S),  O_blk = P·V,  lse = log Σ exp(S)   (per query row)
    backward   P = exp(σ·Q·Kᵀ - lse)  (recomputed, as flash attention does),  D = rowsum(dO ∘ O)
               dV += Pᵀ·dO,  dS = P ∘ (dO·Vᵀ - D),  dQ = σ·dS·K,  dK += σ·dSᵀ·Q
Keys above a block's last position are never touched, so causal attention does ~(nb+1)/(2·nb) of
the full score work (nb blocks), and a sliding window bounds L by c + window.  Saved for backward:
q, k, v, O and lse (no score or probability matrix outlives its block).
"""
from __future__ import annotations

from typing import Optional

import torch

BLOCK = 64   # query positions per block (hpg·64 GEMM rows)


def _block_mask(p0: int, p1: int, k0: int, hpg: int, window: Optional[int], device) -> torch.Tensor:
    """[c·hpg, L] True where attention is forbidden (row = position-major query, col = key k0 + j)."""
    q_pos = torch.arange(p0, p1, device=device).repeat_interleave(hpg)[:, None]   # [c·hpg, 1]
    k_pos = torch.arange(k0, p1, device=device)[None, :]                          # [1, L]
    forbid = k_pos > q_pos
    if window is not None:
        forbid |= (q_pos - k_pos) > window
    return forbid


def _blocks(s: int, window: Optional[int], block: int):
    for p0 in range(0, s, block):
        p1 = min(s, p0 + block)
        yield p0, p1, (max(0, p0 - window) if window is not None else 0)


def _scores(qb, kb, scale, mask):
    """σ·Q·Kᵀ [B, c·hpg, L] with forbidden entries at -inf."""
    z = torch.bmm(qb, kb.transpose(1, 2)).mul_(scale)
    return z.masked_fill_(mask, float("-inf"))


class BlockCausalAttention(torch.autograd.Function):
    """q [B, s, hpg, hn], k/v [B, s, hn] (contiguous) -> O [B, s, hpg, hn]; see the module docstring."""

    @staticmethod
    def forward(ctx, q, k, v, scale: float, window: Optional[int], block: int):
        B, s, hpg, hn = q.shape
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty(B, s * hpg, dtype=q.dtype, device=q.device)
        masks = []
        for p0, p1, k0 in _blocks(s, window, block):
            mask = _block_mask(p0, p1, k0, hpg, window, q.device)
            masks.append(mask)
            qb = q[:, p0:p1].reshape(B, -1, hn)                    # [B, c·hpg, hn] (a view)
            z = _scores(qb, k[:, k0:p1], scale, mask)               # [B, c·hpg, L]
            zmax = z.amax(dim=-1, keepdim=True)
            z.sub_(zmax).exp_()
            total = z.sum(dim=-1, keepdim=True)
            z.div_(total)
            lse[:, p0 * hpg:p1 * hpg] = (zmax + total.log()).squeeze(-1)
            torch.bmm(z, v[:, k0:p1], out=out[:, p0:p1].view(B, -1, hn))
        ctx.scale, ctx.window, ctx.block, ctx.masks = scale, window, block, masks
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        B, s, hpg, hn = q.shape
        dout = dout.contiguous()
        d = torch.linalg.vecdot(dout, out).reshape(B, s * hpg)      # rowsum(dO ∘ O) [B, s·hpg]
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.zeros(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
        for (p0, p1, k0), mask in zip(_blocks(s, ctx.window, ctx.block), ctx.masks):
            rows = slice(p0 * hpg, p1 * hpg)
            qb, kb, vb = q[:, p0:p1].reshape(B, -1, hn), k[:, k0:p1], v[:, k0:p1]
            dob = dout[:, p0:p1].reshape(B, -1, hn)
            p = _scores(qb, kb, ctx.scale, mask).sub_(lse[:, rows, None]).exp_()   # P [B, c·hpg, L]
            dv[:, k0:p1].baddbmm_(p.transpose(1, 2), dob)
            ds = torch.bmm(dob, vb.transpose(1, 2)).sub_(d[:, rows, None]).mul_(p)   # dS [B, c·hpg, L]
            torch.bmm(ds, kb, out=dq[:, p0:p1].view(B, -1, hn))
            dk[:, k0:p1].baddbmm_(ds.transpose(1, 2), qb)
        dq.mul_(ctx.scale)
        dk.mul_(ctx.scale)
        return dq, dk, dv, None, None, None


def block_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float,
                           window: Optional[int] = None, block: int = BLOCK) -> torch.Tensor:
    """megatron layout: query [s, b, np, hn], key/value [s, b, ng, hn] -> [s, b, np·hn].

    Head i of the np query heads reads key/value group i // (np / ng) (megatron's GQA layout).
    ``window``: a query sees itself and at most ``window`` keys before it."""
    s, b, np_, hn = query.shape
    ng = key.shape[2]
    hpg = np_ // ng
    # [s, b, ng, hpg, hn] -> [b, ng, s, hpg, hn] -> [B, s, hpg, hn]; keys [s, b, ng, hn] -> [B, s, hn]
    q = query.reshape(s, b, ng, hpg, hn).permute(1, 2, 0, 3, 4).contiguous().view(b * ng, s, hpg, hn)
    k = key.permute(1, 2, 0, 3).contiguous().view(b * ng, s, hn)
    v = value.permute(1, 2, 0, 3).contiguous().view(b * ng, s, hn)
    out = BlockCausalAttention.apply(q, k, v, float(scale), window, block)   # [B, s, hpg, hn]
    # [b, ng, s, hpg, hn] -> [s, b, ng, hpg, hn] -> [s, b, np·hn]
    return out.view(b, ng, s, hpg, hn).permute(2, 0, 1, 3, 4).reshape(s, b, np_ * hn)
