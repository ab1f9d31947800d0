"""Causal (optionally sliding-window) attention as blocks of large GEMMs, for grouped queries on CPU.

Notation: b micro-batch, s sequence (queries = keys), ng key/value groups, hpg query heads per
group, hn head width, B = b·ng, c query positions per block, L keys a block sees, σ the scale.

torch's fused CPU attention (``scaled_dot_product_attention``) handles each query head against
its key head in small tiles; with one key head for four query heads (Gemma 3 270M) the four heads
of a group read the same keys.  Here the queries of a group are stored position-major,
q [B, s, hpg, hn], so the hpg·c query rows of c consecutive positions form one [hpg·c, hn]
matrix, and each block is one batched GEMM against only the keys it may see:

    keys of block [p0, p1):  [k0, p1),  k0 = 0 (causal) or max(0, p0 - window) (sliding window)
    forward    S = σ·Q_blk·K_[k0,p1)ᵀ  (masked: key > query, or query - key > window; the mask is
               added only to the columns holding forbidden entries)
               P = softmax(S),  O_blk = P·V
    backward   P recomputed (as flash attention does; one more GEMM per block, no [.., L] kept)
               dV += Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ∘ (dP - rowsum(dP ∘ P)),  dQ = σ·dS·K,  dK += σ·dSᵀ·Q
               (blocks last to first: causal without a window the last block sees every key, so its
               dV, dK products write them whole, contiguous, with no zero fill first)
               (dQ, with whole blocks: written block-major, one contiguous batched GEMM a block,
               then scaled into q's layout in one pass)
Keys above a block's last position are never touched, so causal attention does ~(nb+1)/(2·nb) of
the full score work (nb blocks), and a sliding window bounds L by c + window.  Saved for backward:
q, k and v only (no score or probability matrix outlives its block).  Per block the elementwise
work is one pass each for the mask (over the masked columns only), the softmax and its backward.

``keep_probs``: the blocks' P are written into one flat buffer in forward and saved, so backward
skips the recomputation (one GEMM and the mask + softmax passes per block) at the price of
B·Σ c·L floats held per layer until its backward (~s²/2 per head: 18.9 MB a layer at seq 512,
b·heads 32).  With one query head per key head (hpg = 1) recomputing did not beat torch's fused
kernel, keeping did (see sdpa_attention.py).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from megatron_retro.parallel.cpu_compat import outside_redirect

BLOCK = 64   # query positions per block (hpg·64 GEMM rows)
DQ_BLOCK_MAJOR = True   # dQ written block-major with whole blocks (False: into q's layout; benchmarks/ab_step.py --parts dq)
# each non-last block's dK, dV shares formed contiguous (one batched GEMM) and then added to the key slice,
# instead of accumulated into the slice (B separate GEMMs): one more pass over [B, L, hn] a block, but
# batched: 1.04x per layer, 1.009x the LoRA step at one thread, but 0.983x the LoRA step and 0.987x the full
# step at two threads, idle (benchmarks/ab_step.py --parts dkv --threads 2), so on
DKV_SHARES_BATCHED = True


@functools.lru_cache(maxsize=16)
def _block_bias(p0: int, p1: int, k0: int, hpg: int, window: Optional[int], dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """[c·hpg, L] additive mask: 0 where allowed, -inf where forbidden (row = position-major
    query, col = key k0 + j); shared by every layer with the same shape and window."""
    q_pos = torch.arange(p0, p1, device=device).repeat_interleave(hpg)[:, None]   # [c·hpg, 1]
    k_pos = torch.arange(k0, p1, device=device)[None, :]                          # [1, L]
    forbid = k_pos > q_pos
    if window is not None:
        forbid |= (q_pos - k_pos) > window
    return torch.zeros(forbid.shape, dtype=dtype, device=device).masked_fill_(forbid, float("-inf"))


def _blocks(s: int, hpg: int, window: Optional[int], block: int, dtype, device):
    for p0 in range(0, s, block):
        p1 = min(s, p0 + block)
        k0 = max(0, p0 - window) if window is not None else 0
        yield p0, p1, k0, _block_bias(p0, p1, k0, hpg, window, dtype, device)


@functools.lru_cache(maxsize=64)
def _masked_tail(bias: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(lo, bias[:, lo:]) with lo the first column holding a forbidden entry (causal without a
    window: only the block's own c keys; keyed by the cached mask's identity)."""
    cols = torch.isinf(bias).any(dim=0).nonzero()
    lo = int(cols[0]) if cols.numel() else bias.shape[1]
    return lo, bias[:, lo:].contiguous()


def _probs(qb, kb, scale, bias, out=None):
    """softmax(σ·Q·Kᵀ + mask) [B, c·hpg, L]: one GEMM (β = 0: nothing read first), the mask added
    to the columns that hold forbidden entries only, one row-wise softmax (a row of L floats
    stays in cache: one pass over the block), into ``out`` if given.  (15% less than the GEMM on
    top of the broadcast full mask at [32, 64, 448], one core.)"""
    lo, tail = _masked_tail(bias)
    if lo == 0:   # forbidden entries from the first column on (a sliding window): the GEMM on top of the mask
        z = torch.baddbmm(bias.expand(qb.shape[0], -1, -1), qb, kb.transpose(1, 2), alpha=scale)
    else:
        z = torch.baddbmm(qb.new_empty(()).expand(qb.shape[0], *bias.shape), qb, kb.transpose(1, 2),
                          beta=0.0, alpha=scale)                           # [B, c·hpg, L]
        z[:, :, lo:].add_(tail)
    if out is None:
        return torch.softmax(z, dim=-1)
    return torch.ops.aten._softmax.out(z, -1, False, out=out)


def _kept_block(buf, off: int, B: int, rows: int, keys: int) -> torch.Tensor:
    """The contiguous [B, rows, keys] block of the flat probabilities buffer at element ``off``."""
    return buf[off:off + B * rows * keys].view(B, rows, keys)


def _block_major(s: int, block: int) -> bool:
    """Every block has ``block`` positions: O is then stored block by block, [nb, B, c·hpg, hn], so
    each block's P·V writes a contiguous [B, c·hpg, hn] (one batched GEMM; a position slice of
    [B, s, hpg, hn] is strided and runs as B separate GEMMs).  The caller's permute to megatron's
    [s, b, np·hn] copies either layout once."""
    return s % block == 0


def _accumulate(acc, a, b, part=None):
    """acc += a·b for a key slice acc [B, L, hn] of [B, s, hn] (strided batch: BLAS runs B separate
    GEMMs); with a scratch ``part`` the product is one batched GEMM into part's first B·L·hn floats,
    then added."""
    if part is None:
        acc.baddbmm_(a, b)
    else:
        acc.add_(torch.bmm(a, b, out=part[:acc.numel()].view(acc.shape)))


class BlockCausalAttention(torch.autograd.Function):
    """q [B, s, hpg, hn], k/v [B, s, hn] (contiguous) -> O [nb, B, c·hpg, hn] when every block is
    full (``_block_major``), else O [B, s, hpg, hn]; see the module docstring."""

    @staticmethod
    @outside_redirect
    def forward(ctx, q, k, v, scale: float, window: Optional[int], block: int, keep_probs: bool = False):
        B, s, hpg, hn = q.shape
        major = _block_major(s, block)
        out = torch.empty((s // block, B, block * hpg, hn) if major else q.shape, dtype=q.dtype, device=q.device)
        blocks = list(_blocks(s, hpg, window, block, q.dtype, q.device))
        buf = torch.empty(B * sum(b.shape[0] * b.shape[1] for *_, b in blocks), dtype=q.dtype,
                          device=q.device) if keep_probs else None   # every block's P, flat
        off = 0
        for p0, p1, k0, bias in blocks:
            keep = _kept_block(buf, off, B, *bias.shape) if keep_probs else None
            p = _probs(q[:, p0:p1].reshape(B, -1, hn), k[:, k0:p1], scale, bias, keep)   # [B, c·hpg, L]
            torch.bmm(p, v[:, k0:p1], out=out[p0 // block] if major else out[:, p0:p1].view(B, -1, hn))
            off += p.numel()
        ctx.scale, ctx.window, ctx.block = scale, window, block
        ctx.save_for_backward(q, k, v, buf)
        return out

    @staticmethod
    @outside_redirect
    def backward(ctx, dout):
        q, k, v, buf = ctx.saved_tensors
        B, s, hpg, hn = q.shape
        dout = dout.contiguous()   # O's layout: [nb, B, c·hpg, hn] or [B, s, hpg, hn]
        major = _block_major(s, ctx.block)
        nb = s // ctx.block
        dq_major = major and DQ_BLOCK_MAJOR
        # dQ blocks land block-major when every block is whole ([nb, B, c·hpg, hn]: each block's dS·K
        # one contiguous batched GEMM; a position slice of [B, s, hpg, hn] runs as B separate GEMMs),
        # then one scaling pass writes them into q's layout
        dqm = torch.empty((nb, B, ctx.block * hpg, hn) if dq_major else q.shape, dtype=q.dtype, device=q.device)
        blocks = list(_blocks(s, hpg, ctx.window, ctx.block, q.dtype, q.device))
        offs = [0]                                   # each block's offset in the kept buffer
        for *_, bias in blocks[:-1]:
            offs.append(offs[-1] + B * bias.numel())
        dk = dv = None
        part = torch.empty(B * s * hn, dtype=q.dtype, device=q.device) if DKV_SHARES_BATCHED else None
        # last block first: causal without a window, it sees every key, so its products write dK and
        # dV whole (contiguous: one batched GEMM, no zero fill); the other blocks then accumulate
        for (p0, p1, k0, bias), off in zip(reversed(blocks), reversed(offs)):
            qb, kb, vb = q[:, p0:p1].reshape(B, -1, hn), k[:, k0:p1], v[:, k0:p1]
            dob = dout[p0 // ctx.block] if major else dout[:, p0:p1].reshape(B, -1, hn)
            # P [B, c·hpg, L]: kept from forward, or recomputed
            p = _kept_block(buf, off, B, *bias.shape) if buf is not None else _probs(qb, kb, ctx.scale, bias)
            first = dv is None
            if first and not (k0 == 0 and p1 == s):   # a window's last block leaves early keys untouched
                dk, dv = torch.zeros(k.shape, dtype=k.dtype, device=k.device), torch.zeros_like(v)
                first = False
            if first:
                dv = torch.bmm(p.transpose(1, 2), dob)                # [B, s, hn]
            else:
                _accumulate(dv[:, k0:p1], p.transpose(1, 2), dob, part)
            dp = torch.bmm(dob, vb.transpose(1, 2))                  # dO·Vᵀ
            ds = torch.ops.aten._softmax_backward_data(dp, p, -1, p.dtype)   # P ∘ (dP - rowsum(dP ∘ P))
            torch.bmm(ds, kb, out=dqm[p0 // ctx.block] if dq_major else dqm[:, p0:p1].view(B, -1, hn))
            if first:
                dk = torch.bmm(ds.transpose(1, 2), qb)                # [B, s, hn]
            else:
                _accumulate(dk[:, k0:p1], ds.transpose(1, 2), qb, part)
        if dq_major:   # [nb, B, c, hpg, hn] -> [B, nb, c, hpg, hn] = q's [B, s, hpg, hn], scaled on the way
            dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
            torch.mul(dqm.view(nb, B, ctx.block, hpg, hn).transpose(0, 1), ctx.scale,
                      out=dq.view(B, nb, ctx.block, hpg, hn))
        else:
            dq = dqm.mul_(ctx.scale)
        dk.mul_(ctx.scale)
        return dq, dk, dv, None, None, None, None


def block_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float,
                           window: Optional[int] = None, block: int = BLOCK, keep_probs: bool = False) -> torch.Tensor:
    """megatron layout: query [s, b, np, hn], key/value [s, b, ng, hn] -> [s, b, np·hn].

    Head i of the np query heads reads key/value group i // (np / ng) (megatron's GQA layout).
    ``window``: a query sees itself and at most ``window`` keys before it; ``keep_probs``: save the
    probabilities for backward instead of recomputing them (module docstring)."""
    s, b, np_, hn = query.shape
    ng = key.shape[2]
    hpg = np_ // ng
    # [s, b, ng, hpg, hn] -> [b, ng, s, hpg, hn] -> [B, s, hpg, hn]; keys [s, b, ng, hn] -> [B, s, hn]
    q = query.reshape(s, b, ng, hpg, hn).permute(1, 2, 0, 3, 4).contiguous().view(b * ng, s, hpg, hn)
    k = key.permute(1, 2, 0, 3).contiguous().view(b * ng, s, hn)
    v = value.permute(1, 2, 0, 3).contiguous().view(b * ng, s, hn)
    out = BlockCausalAttention.apply(q, k, v, float(scale), window, block, keep_probs)
    if _block_major(s, block):   # [nb, B, c·hpg, hn] = [nb, b, ng, c, hpg, hn] -> [nb, c, b, ng, hpg, hn]
        return out.view(s // block, b, ng, block, hpg, hn).permute(0, 3, 1, 2, 4, 5).reshape(s, b, np_ * hn)
    # [B, s, hpg, hn] = [b, ng, s, hpg, hn] -> [s, b, ng, hpg, hn] -> [s, b, np·hn]
    return out.view(b, ng, s, hpg, hn).permute(2, 0, 1, 3, 4).reshape(s, b, np_ * hn)
