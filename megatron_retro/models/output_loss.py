"""Output layer + cross-entropy in one chunked op: per-token losses without the full logits.

Notation: n rows (tokens whose loss is taken), d hidden, v vocabulary (padded), tp tensor-parallel
size, vl = v / tp the vocabulary shard of this rank (rows [rank·vl, (rank+1)·vl) of the output
weight), c rows per chunk.

    hidden  [ns, bs, d]   the final-norm output, full sequence on this rank (after the SP gather)
    weight  [vl, d]       this rank's vocabulary shard of the output layer (or tied embedding)
    labels  [bs, ns]      int64 target ids (any value where the loss mask is 0)
    mask    [bs, ns]      loss mask (None = every token); only rows with mask != 0 get logits
    returns [bs, ns]      per-token losses (fp32, or wider inputs' dtype), 0 where the mask is 0

Maths, per row i with logits z = h_i·Wᵀ (over the full vocabulary, split across TP ranks):
    loss_i = log Σ_j exp(z_j) - z_{y_i}
    ∂loss_i/∂z = softmax(z) - onehot(y_i)              =: g_i  [v]
    ∂L/∂h_i = ĝ_i · g_i · W          ∂L/∂W = Σ_i ĝ_i · g_iᵀ · h_i      (ĝ_i = ∂L/∂loss_i)
TP follows megatron's vocab-parallel cross-entropy: the row max is all-reduced (MAX), then the
sum of exponentials and the target logit (non-zero only on the rank owning y_i) in one SUM
all-reduce per chunk; ∂L/∂h is a partial sum over vocabulary shards, reduced by the caller's
input mapping (megatron's copy-to-TP region, or the SP all-gather whose backward reduce-scatters),
exactly as for the output ColumnParallelLinear.

Chunks of c rows are processed one at a time: only a [c, vl] fp32 logits block is ever alive.
The gradients are computed in the forward (the block is at hand) assuming ĝ_i = mask_i, and the
backward scales them: ∂L/∂h_i by ĝ_i exactly, ∂L/∂W by the common factor ĝ_i / mask_i (the loss is
Σ mask·loss times a scalar in every schedule here).  If ĝ is not of that form the backward
recomputes the blocks for ∂L/∂W from the saved row log-sum-exps (correct, one GEMM slower).
A frozen weight (LoRA, QLoRA) gets no ∂L/∂W work and its input rows are not even saved.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from megatron_retro.parallel.cpu_compat import outside_redirect

DEFAULT_CHUNK_ELEMENTS = 1 << 25   # fp32 logits per block: 128 MiB (fewer, larger blocks ran faster on CPU)


def _tp(group) -> tuple[int, int]:
    if group is None or not dist.is_initialized():
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _chunk_rows(n: int, vl: int, chunk_elements: int) -> int:
    return max(1, min(n, chunk_elements // max(vl, 1)))


def _softmax_block(h_c, weight, labels_c, vstart, group, tp):
    """[c, vl] exp(z - max) block, row max, sum of exps and target logit - max (all over TP)."""
    z = h_c @ weight.t()                                    # [c, vl]
    z = z.to(torch.promote_types(z.dtype, torch.float32))   # softmax in fp32 (or wider)
    zmax = z.amax(dim=1)                                    # [c] (no argmax: 3x faster than max on CPU)
    if tp > 1:
        dist.all_reduce(zmax, op=dist.ReduceOp.MAX, group=group)
    z.sub_(zmax[:, None])
    local = labels_c - vstart
    owned = (local >= 0) & (local < z.shape[1])
    idx = local.clamp(0, z.shape[1] - 1)
    target = z.gather(1, idx[:, None]).squeeze(1) * owned   # [c]
    z.exp_()
    sums = torch.stack([z.sum(dim=1), target])              # [2, c]
    if tp > 1:
        dist.all_reduce(sums, group=group)
    return z, zmax, sums[0], sums[1], owned, idx


def _to_grad(p, sumexp, owned, idx):
    """exp(z - max) block -> softmax - onehot, in place."""
    p.div_(sumexp[:, None])
    p.scatter_add_(1, idx[:, None], -owned.to(p.dtype)[:, None])
    return p


class _LinearCrossEntropy(torch.autograd.Function):
    """Rows [n, d] x weight [vl, d] -> fp32 losses [n]; see the module docstring."""

    @staticmethod
    @outside_redirect
    def forward(ctx, h, weight, labels, row_weight, group, chunk_elements):
        tp, rank = _tp(group)
        n, vl = h.shape[0], weight.shape[0]
        vstart = rank * vl
        need_dh, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        acc = torch.promote_types(h.dtype, torch.float32)
        losses = torch.empty(n, dtype=acc, device=h.device)
        lse = torch.empty(n, dtype=acc, device=h.device) if need_dw else None
        dh = torch.empty_like(h) if need_dh else None
        dw = torch.zeros(weight.shape, dtype=acc, device=h.device) if need_dw else None
        c = _chunk_rows(n, vl, chunk_elements)
        for s in range(0, n, c):
            e = min(n, s + c)
            p, zmax, sumexp, target, owned, idx = _softmax_block(h[s:e], weight, labels[s:e], vstart, group, tp)
            losses[s:e] = sumexp.log() - target
            if lse is not None:
                lse[s:e] = zmax + sumexp.log()
            if need_dh or need_dw:
                g = _to_grad(p, sumexp, owned, idx).to(weight.dtype)   # [c, vl]
                if need_dh:                                             # [c, d] partial over TP
                    if dh.dtype == weight.dtype:
                        torch.mm(g, weight, out=dh[s:e])
                    else:
                        dh[s:e] = g @ weight
                if need_dw:
                    rows = h[s:e] if row_weight is None else h[s:e] * row_weight[s:e, None].to(h.dtype)
                    if acc == weight.dtype:
                        dw.addmm_(g.t(), rows)                          # [vl, d], accumulated in place
                    else:
                        dw += (g.t() @ rows).to(acc)
            del p
        ctx.group, ctx.chunk_elements, ctx.vstart = group, chunk_elements, vstart
        ctx.save_for_backward(dh, dw, row_weight, lse, h if need_dw else None, weight if need_dw else None,
                              labels if need_dw else None)
        return losses

    @staticmethod
    @outside_redirect
    def backward(ctx, grad):
        dh, dw, row_weight, lse, h, weight, labels = ctx.saved_tensors
        grad = grad.to(torch.promote_types(grad.dtype, torch.float32))
        gh = gw = None
        if dh is not None:
            gh = dh * grad[:, None].to(dh.dtype)
        if dw is not None:
            factor = _common_factor(grad, row_weight)
            if factor is not None:
                gw = (dw * factor).to(weight.dtype)
            else:
                gw = _recompute_dw(h, weight, labels, lse, grad, ctx.vstart, ctx.chunk_elements)
        return gh, gw, None, None, None, None


def _common_factor(grad: torch.Tensor, row_weight: Optional[torch.Tensor]) -> Optional[float]:
    """f such that grad == f · row_weight (row_weight None = ones), else None."""
    if grad.numel() == 0:
        return 0.0
    expect = torch.ones_like(grad) if row_weight is None else row_weight.to(grad.dtype)
    f = grad[0] / expect[0]
    if torch.allclose(grad, expect * f, rtol=1e-6, atol=0.0):
        return float(f)
    return None


def _recompute_dw(h, weight, labels, lse, grad, vstart, chunk_elements):
    """∂L/∂W for an arbitrary per-row upstream gradient, block by block from the saved lse."""
    n, vl = h.shape[0], weight.shape[0]
    dw = torch.zeros(weight.shape, dtype=lse.dtype, device=h.device)
    c = _chunk_rows(n, vl, chunk_elements)
    for s in range(0, n, c):
        e = min(n, s + c)
        p = (h[s:e] @ weight.t()).to(lse.dtype).sub_(lse[s:e, None]).exp_()   # softmax [c, vl]
        local = labels[s:e] - vstart
        owned = (local >= 0) & (local < vl)
        p.scatter_add_(1, local.clamp(0, vl - 1)[:, None], -owned.to(p.dtype)[:, None])
        p.mul_(grad[s:e, None].to(p.dtype))
        dw += (p.to(weight.dtype).t() @ h[s:e]).to(dw.dtype)
    return dw.to(weight.dtype)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         loss_mask: Optional[torch.Tensor] = None, tp_group=None,
                         chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """Per-token losses [bs, ns] of ``hidden`` [ns, bs, d] through the vocab shard ``weight``.

    Only rows where ``loss_mask`` [bs, ns] is non-zero get logits (QA fine-tuning: the answer
    tokens).  ``tp_group``: the tensor-parallel group over which the vocabulary is split (None or
    size 1: the whole vocabulary is here).  Gradients reach ``hidden`` (partial over TP) and
    ``weight`` (when it requires grad).
    """
    ns, bs, d = hidden.shape
    if labels.shape != (bs, ns):
        raise ValueError(f"linear_cross_entropy: labels {tuple(labels.shape)} != [bs, ns] = {(bs, ns)}")
    rows = hidden.reshape(ns * bs, d)                      # row r = (position r // bs, sample r % bs)
    flat_labels = labels.t().reshape(-1)                  # [ns·bs], same row order
    if loss_mask is None:
        losses = _LinearCrossEntropy.apply(rows, weight, flat_labels, None, tp_group, chunk_elements)
        return losses.view(ns, bs).t()
    if loss_mask.shape != (bs, ns):
        raise ValueError(f"linear_cross_entropy: loss_mask {tuple(loss_mask.shape)} != [bs, ns] = {(bs, ns)}")
    flat_mask = loss_mask.t().reshape(-1)
    flat_mask = flat_mask.to(torch.promote_types(flat_mask.dtype, torch.float32))
    sel = flat_mask.nonzero().squeeze(1)                  # [n]
    if sel.numel() == flat_mask.numel():
        row_weight = None if bool((flat_mask == 1).all()) else flat_mask
        losses = _LinearCrossEntropy.apply(rows, weight, flat_labels, row_weight, tp_group, chunk_elements)
        return losses.view(ns, bs).t()
    row_weight = flat_mask.index_select(0, sel)
    row_weight = None if bool((row_weight == 1).all()) else row_weight
    losses = _LinearCrossEntropy.apply(rows.index_select(0, sel), weight, flat_labels.index_select(0, sel),
                                       row_weight, tp_group, chunk_elements)
    full = torch.zeros(ns * bs, dtype=losses.dtype, device=losses.device).index_copy(0, sel, losses)
    return full.view(ns, bs).t()
