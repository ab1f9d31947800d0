"""SwiGLU in one autograd op, and the local spec's MLP that uses it.

Notation: M tokens (s·b), f the MLP width on this TP rank; the fc1 output x [..., 2f] holds
[gate | up] (megatron's layout per rank), σ the logistic function.

megatron-core's unfused gated MLP (no apex / TE) runs ``chunk`` -> ``x_up + glu_linear_offset``
(a full pass adding 0.0) -> ``silu(gate) * up`` and keeps silu(gate) for backward; autograd then
writes d(gate), d(up) as two [M, f] tensors and concatenates them (``SplitBackward``: another full
pass over [M, 2f]).  Here:

    forward    y = silu(g)·u                              (silu into y, then y *= u: 2 passes)
    backward   dg = dy·u·σ(g)·(1 + g·(1 - σ(g)))          (dy·u, then aten's silu_backward, in place)
               du = dy·silu(g)                              (silu, then *= dy)
both written straight into the two halves of one [.., 2f] gradient (no concatenation), and only
x itself is saved (silu(g) is recomputed in backward: 1/3 less activation memory for this op).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.mlp import MLP


class SwiGLUFunction(torch.autograd.Function):
    """x [..., 2f] = [gate | up] -> silu(gate)·up [..., f]."""

    @staticmethod
    def forward(ctx, x):
        f = x.shape[-1] // 2
        gate, up = x[..., :f], x[..., f:]
        y = torch.empty(up.shape, dtype=x.dtype, device=x.device)  # [..., f]
        torch.ops.aten.silu.out(gate, out=y)
        y.mul_(up)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        f = x.shape[-1] // 2
        gate, up = x[..., :f], x[..., f:]
        dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)   # [..., 2f]
        dgate, dup = dx[..., :f], dx[..., f:]
        torch.mul(dy, up, out=dgate)                                 # dy·u
        torch.ops.aten.silu_backward.grad_input(dgate, gate, grad_input=dgate)   # ·σ(g)(1 + g(1 - σ(g)))
        torch.ops.aten.silu.out(gate, out=dup)
        dup.mul_(dy)                                                 # dy·silu(g)
        return dx


def swiglu(x: torch.Tensor) -> torch.Tensor:
    """silu(x[..., :f]) · x[..., f:] with the one-op backward above."""
    return SwiGLUFunction.apply(x)


class SwiGLUMLP(MLP):
    """megatron's MLP; the plain SwiGLU case (no bias, no per-token scale, no clamp or offset, no
    fused CUDA/TE activation) runs :func:`swiglu`, every other case megatron's own forward."""

    def _plain_swiglu(self) -> bool:
        c = self.config
        return (c.gated_linear_unit and self.activation_func is F.silu and not c.bias_activation_fusion
                and not c.use_te_activation_func and c.activation_func_clamp_value is None
                and c.glu_linear_offset == 0.0 and not c.add_bias_linear)

    def forward(self, hidden_states, per_token_scale=None, **kwargs):
        if per_token_scale is not None or not self._plain_swiglu():
            return super().forward(hidden_states, per_token_scale=per_token_scale, **kwargs)
        h, _ = self.linear_fc1(hidden_states)            # [s, b, 2f]
        return self.linear_fc2(swiglu(h))                 # ([s, b, d], None)
