"""SwiGLU and GeGLU (tanh GELU, Gemma's) in one autograd op, and the local spec's MLP that uses it.

Notation: M tokens (s·b), f the MLP width on this TP rank; the fc1 output x [..., 2f] holds
[gate | up] (megatron's layout per rank), σ the logistic function.

megatron-core's unfused gated MLP (no apex / TE) runs ``chunk`` -> ``x_up + glu_linear_offset``
(a full pass adding 0.0) -> ``silu(gate) * up`` and keeps silu(gate) for backward; autograd then
writes d(gate), d(up) as two [M, f] tensors and concatenates them (``SplitBackward``: another full
pass over [M, 2f]).  Here:

    forward    y = silu(g)·u                              (silu into y, then y *= u: 2 passes)
    backward   dg = dy·u·σ(g)·(1 + g·(1 - σ(g)))          (aten's silu_backward of u into dg)
               du = dy·silu(g)                              (silu into du)
               then both halves times dy in one broadcast pass over [.., 2, f] (3 passes, not 4:
               0.85x the backward's time at the benchmark's fc1, one core)
both written straight into the two halves of one [.., 2f] gradient (no concatenation), and only
x itself is saved (silu(g) is recomputed in backward: 1/3 less activation memory for this op).
GeGLU is the same with gelu_tanh in place of silu (aten's ``gelu_backward(approximate="tanh")``
for the gate's derivative); tanh-GELU costs several times silu on CPU, so its act(g) [.., f] is
kept from the forward instead of recomputed (one more [M, f] saved per layer, one GELU pass less).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.mlp import MLP

from megatron_retro.parallel.cpu_compat import outside_redirect


SAVE_ACTIVATION = {"gelu_tanh"}   # activations kept for backward rather than recomputed


def _act_out(kind: str, gate: torch.Tensor, out: torch.Tensor) -> None:
    if kind == "silu":
        torch.ops.aten.silu.out(gate, out=out)
    else:
        torch.ops.aten.gelu.out(gate, approximate="tanh", out=out)


def _act_backward(kind: str, grad: torch.Tensor, gate: torch.Tensor, out: torch.Tensor) -> None:
    """out = grad·act'(gate) (``out`` may be ``grad``)."""
    if kind == "silu":
        torch.ops.aten.silu_backward.grad_input(grad, gate, grad_input=out)   # ·σ(g)(1 + g(1 - σ(g)))
    else:
        torch.ops.aten.gelu_backward.grad_input(grad, gate, approximate="tanh", grad_input=out)


class GatedActFunction(torch.autograd.Function):
    """x [..., 2f] = [gate | up] -> act(gate)·up [..., f], act = silu or gelu_tanh."""

    @staticmethod
    @outside_redirect
    def forward(ctx, x, kind: str = "silu"):
        f = x.shape[-1] // 2
        gate, up = x[..., :f], x[..., f:]
        y = torch.empty(up.shape, dtype=x.dtype, device=x.device)  # [..., f]
        _act_out(kind, gate, y)
        act = y.clone() if kind in SAVE_ACTIVATION else None        # act(g) [..., f]
        y.mul_(up)
        ctx.kind = kind
        ctx.save_for_backward(x, act)
        return y

    @staticmethod
    @outside_redirect
    def backward(ctx, dy):
        x, act = ctx.saved_tensors
        f = x.shape[-1] // 2
        gate, up = x[..., :f], x[..., f:]
        dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)   # [..., 2f]
        dgate, dup = dx[..., :f], dx[..., f:]
        if act is None:   # act(g) recomputed
            _act_backward(ctx.kind, up, gate, dgate)                 # u·act'(g)
            _act_out(ctx.kind, gate, dup)                            # act(g)
            dx.unflatten(-1, (2, f)).mul_(dy.unsqueeze(-2))          # both halves ·dy, one pass
        else:
            torch.mul(dy, up, out=dgate)                             # dy·u
            _act_backward(ctx.kind, dgate, gate, dgate)              # ·act'(g)
            torch.mul(dy, act, out=dup)                              # dy·act(g)
        return dx, None


def swiglu(x: torch.Tensor) -> torch.Tensor:
    """silu(x[..., :f]) · x[..., f:] with the one-op backward above."""
    return GatedActFunction.apply(x, "silu")


def geglu_tanh(x: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(x[..., :f]) · x[..., f:] (Gemma's MLP) with the one-op backward above."""
    return GatedActFunction.apply(x, "gelu_tanh")


class SwiGLUMLP(MLP):
    """megatron's MLP; the plain SwiGLU / GeGLU-tanh case (no bias, no per-token scale, no clamp or
    offset, no fused CUDA/TE activation) runs :func:`swiglu` / :func:`geglu_tanh`, every other case
    megatron's own forward."""

    def _plain_glu(self):
        """The fused activation for this config, or None (megatron's own path)."""
        from megatron_retro.models.transformer_config import gelu_tanh

        c = self.config
        if not (c.gated_linear_unit and not c.bias_activation_fusion and not c.use_te_activation_func
                and c.activation_func_clamp_value is None and c.glu_linear_offset == 0.0 and not c.add_bias_linear):
            return None
        return {F.silu: swiglu, gelu_tanh: geglu_tanh}.get(self.activation_func)

    def forward(self, hidden_states, per_token_scale=None, **kwargs):
        glu = self._plain_glu() if per_token_scale is None else None
        if glu is None:
            return super().forward(hidden_states, per_token_scale=per_token_scale, **kwargs)
        h, _ = self.linear_fc1(hidden_states)            # [s, b, 2f]
        return self.linear_fc2(glu(h))                    # ([s, b, d], None)
