"""RMSNorm (plain, and Gemma's zero-centred (1 + w) form) as one autograd op that saves only its
input and the per-row 1/rms.

Notation: x [..., h] the input, r = rsqrt(mean(x²) + eps) [..., 1], γ = w (+ 1 when zero-centred),
x̂ = x·r, y = x̂·γ.  Backward, with dy [..., h]:

    dx = r·(dy·γ) - x · r³·mean(dy·γ·x)        dw = Σ_rows dy·x̂  (only when w is trained: not under LoRA)

torch's ``F.rms_norm`` on CPU is a composite (pow, mean, add, rsqrt, two products) whose autograd
saves x², x̂ and the products' inputs and walks each op backwards (about ten passes over [.., h]);
here the forward is a row norm and two products, the backward five passes (plus two for dw), with
single-pass row reductions (``vector_norm``, ``vecdot``).  Computed in fp32 (or fp64) and cast back
(Gemma's and Llama's rule).  :class:`FastRMSNorm` runs it on CPU fp32/fp64; other devices and dtypes
keep torch's op (its bf16/fp16 maths runs the statistic in fp32 as well).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from megatron_retro.parallel.cpu_compat import outside_redirect


class RMSNormFunction(torch.autograd.Function):
    """(x [..., h], w [h], eps, offset) -> x·rsqrt(mean(x²) + eps)·(w + offset); see the module docstring."""

    @staticmethod
    @outside_redirect
    def forward(ctx, x, weight, eps: float, offset: float):
        acc = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(acc)
        h = x.shape[-1]
        r = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square_().div_(h).add_(eps).rsqrt_()  # [..., 1]
        gamma = weight.to(acc) + offset if offset else weight.to(acc)                                  # [h]
        y = torch.mul(xf, r).mul_(gamma)                                                               # [..., h]
        ctx.offset = offset
        ctx.save_for_backward(x, r, weight)
        return y.to(x.dtype)

    @staticmethod
    @outside_redirect
    def backward(ctx, dy):
        x, r, weight = ctx.saved_tensors
        acc = torch.promote_types(x.dtype, torch.float32)
        xf, dyf = x.to(acc), dy.to(acc)
        h = x.shape[-1]
        gamma = weight.to(acc) + ctx.offset if ctx.offset else weight.to(acc)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dyg = dyf * gamma                                                                 # [..., h]
            coef = torch.linalg.vecdot(dyg, xf).unsqueeze(-1).mul_(r.pow(3)).div_(-h)         # -r³·mean(dy·γ·x)
            dx = dyg.mul_(r).addcmul_(xf, coef).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dw = torch.mul(xf, r).mul_(dyf).reshape(-1, h).sum(0).to(weight.dtype)           # [h]
        return dx, dw, None, None


class FastRMSNorm(torch.nn.RMSNorm):
    """``torch.nn.RMSNorm`` (same parameters, same state dict) run by :class:`RMSNormFunction` on CPU
    fp32/fp64; ``zero_centered``: scaled by (1 + w) with w initialised to 0 (Gemma's; megatron's
    ``layernorm_zero_centered_gamma``)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, zero_centered: bool = False, **factory) -> None:
        super().__init__(hidden_size, eps=eps, **factory)
        self.offset = 1.0 if zero_centered else 0.0
        if zero_centered:
            with torch.no_grad():
                self.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., h] -> [..., h]
        w = self.weight
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and w.dtype == x.dtype:
            return RMSNormFunction.apply(x, w, self.eps, self.offset)
        return F.rms_norm(x, self.normalized_shape, w + self.offset if self.offset else w, self.eps)
