"""Rotary position embedding in one pass each way, for megatron-core's attention on CPU.

Notation: s sequence, b micro-batch, h heads, hn head width, r rotated width (hn·rotary_percent),
q = r / 2.  megatron's ``freqs`` [s, 1, 1, r] hold the angles twice ([θ, θ]); c = cos, n = sin.

megatron-core's unfused path (``_apply_rotary_pos_emb_bshd``) computes t·c + rotate_half(t)·n with
rotate_half = cat(-t₂, t₁) and then cat(result, t_pass): a negation, two concatenations (the
second a full copy even when nothing passes through), two products and a sum, and autograd
repeats most of it in backward — about a tenth of a LoRA step at the benchmark shape.  Here each
direction writes its output once:
    forward    o₁ = t₁·c₁ - t₂·n₁,   o₂ = t₂·c₂ + t₁·n₂,   o_pass = t_pass
    backward   dt₁ = do₁·c₁ + do₂·n₂,   dt₂ = do₂·c₂ - do₁·n₁,   dt_pass = do_pass
(the transpose of the rotation), in three passes each way: t·c over both halves as one product,
then one addcmul per half with the sine's signs folded into a small [s, 1, 1, r] table (18% less
time than a product and an addcmul per half, one core).  :func:`install` points megatron's attention module at
:func:`apply_rotary_pos_emb`, which takes this path for the plain case (bshd layout, no packed
sequences, not interleaved, no MLA, no TE fusion) and hands every other case to megatron's own.

On CPU the forward writes its [s, b, h, hn] result into [b, h, s, hn]-contiguous memory (a
permuted view): the layout the core attention reads — SDPAttention's ``permute(1, 2, 0, 3)
.contiguous()`` is then free for q and k (two of its three copies gone), and megatron's unfused
attention's ``reshape(s, b·h, hn)`` stays a view.  Values are unchanged; only strides differ.
"""
from __future__ import annotations

import torch

from megatron_retro.parallel.cpu_compat import outside_redirect

_MEGATRON = {}


class _RotaryFunction(torch.autograd.Function):
    """t [s, b, h, hn], cos/sin [s, 1, 1, r] (t's dtype) -> rotated t."""

    @staticmethod
    @outside_redirect
    def forward(ctx, t, cos, sin):
        r = cos.shape[-1]
        q = r // 2
        out = _attention_layout(t)
        _rotate(out, t, cos, torch.cat([-sin[..., :q], sin[..., q:]], -1), q, r)   # [-n₁ | n₂]
        ctx.save_for_backward(cos, sin)
        return out

    @staticmethod
    @outside_redirect
    def backward(ctx, dout):
        cos, sin = ctx.saved_tensors
        r = cos.shape[-1]
        q = r // 2
        dt = torch.empty(dout.shape, dtype=dout.dtype, device=dout.device)
        _rotate(dt, dout, cos, torch.cat([sin[..., q:], -sin[..., :q]], -1), q, r)   # [n₂ | -n₁]
        return dt, None, None


def _attention_layout(t: torch.Tensor) -> torch.Tensor:
    """An empty [s, b, h, hn] tensor like t, stored [b, h, s, hn]-contiguous on CPU (see above)."""
    if t.dim() != 4 or t.device.type != "cpu":
        return torch.empty(t.shape, dtype=t.dtype, device=t.device)
    s, b, h, hn = t.shape
    return torch.empty((b, h, s, hn), dtype=t.dtype, device=t.device).permute(2, 0, 1, 3)


def _rotate(out, t, cos, signed_sin, q, r):
    """out₁ = t₁·c₁ + t₂·m₁,  out₂ = t₂·c₂ + t₁·m₂,  out_pass = t_pass, with m = ``signed_sin``
    [s, 1, 1, r]: forward m = [-n₁ | n₂]; backward (the transpose) m = [n₂ | -n₁].  Three passes:
    c over both halves at once ([.., 2, q] views), then one addcmul per half."""
    t2, o2 = t[..., :r].unflatten(-1, (2, q)), out[..., :r].unflatten(-1, (2, q))   # [s, b, h, 2, q]
    m = signed_sin.unflatten(-1, (2, q))
    torch.mul(t2, cos.unflatten(-1, (2, q)), out=o2)
    o2[..., 0, :].addcmul_(t2[..., 1, :], m[..., 0, :])
    o2[..., 1, :].addcmul_(t2[..., 0, :], m[..., 1, :])
    if r < t.shape[-1]:
        out[..., r:].copy_(t[..., r:])


def rotary(t: torch.Tensor, freqs: torch.Tensor, mscale: float = 1.0) -> torch.Tensor:
    """megatron's non-interleaved RoPE of t [s, b, h, hn] with freqs [s, 1, 1, r] (r even, <= hn)."""
    cos = (torch.cos(freqs) * mscale).to(t.dtype)
    sin = (torch.sin(freqs) * mscale).to(t.dtype)
    return _RotaryFunction.apply(t, cos, sin)


def apply_rotary_pos_emb(t, freqs, config, cu_seqlens=None, mscale: float = 1.0, cp_group=None):
    """Drop-in for megatron's ``apply_rotary_pos_emb``: the one-pass path where it applies."""
    plain = (cu_seqlens is None and not config.apply_rope_fusion and not config.rotary_interleaved
             and not config.multi_latent_attention and t.dim() == 4 and freqs.shape[-1] % 2 == 0
             and freqs.shape[-1] <= t.shape[-1])
    if plain:
        return rotary(t, freqs, mscale)
    return _MEGATRON["apply_rotary_pos_emb"](t, freqs, config, cu_seqlens=cu_seqlens, mscale=mscale,
                                             cp_group=cp_group)


def install() -> None:
    """Route megatron-core attention's RoPE through :func:`apply_rotary_pos_emb` (idempotent)."""
    from megatron.core.transformer import attention

    if attention.apply_rotary_pos_emb is not apply_rotary_pos_emb:
        _MEGATRON["apply_rotary_pos_emb"] = attention.apply_rotary_pos_emb
        attention.apply_rotary_pos_emb = apply_rotary_pos_emb
