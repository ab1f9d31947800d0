"""RMSNorm in one autograd op that saves only its input and the per-row 1/rms (CPU fp32/fp64).

Notation: M rows (all leading dims), d normalised width, x [M, d], w [d], dy [M, d].

    r  = 1 / sqrt(mean_j x_j² + eps)                [M, 1]   (saved with x)
    y  = x·r·w
    x̂  = x·r                                         (recomputed in backward, not saved)
    g  = dy·w
    dx = r·(g - x̂·mean_j(g_j·x̂_j))                   (∂y/∂x of the row's normalisation)
    dw = Σ_rows dy·x̂                                 (only when w is trained: not under LoRA)

torch's ``F.rms_norm`` on CPU is a composite (pow, mean, add, rsqrt, two products) whose autograd
saves the normalised x̂ too and walks each op backwards (about ten passes over [M, d]); here the
forward is a row norm and two products, the backward five passes (plus two for dw), and the
row reductions are single-pass (``vector_norm``, ``vecdot``).  Other dtypes / devices keep
torch's op (its bf16/fp16 maths runs the statistic in fp32; this path does not replicate that).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class RMSNormFunction(torch.autograd.Function):
    """x [..., d], weight [d] -> x·rsqrt(mean(x²) + eps)·weight; see the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        d = x.shape[-1]
        x2 = x.reshape(-1, d)                                                   # [M, d]
        r = torch.linalg.vector_norm(x2, 2, dim=-1, keepdim=True)               # [M, 1] = |x|
        r.square_().div_(d).add_(eps).rsqrt_()                                  # 1 / rms
        y = torch.mul(x2, r).mul_(weight)                                       # [M, d]
        ctx.save_for_backward(x2, r, weight)
        ctx.lead = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, r, weight = ctx.saved_tensors
        d = x2.shape[-1]
        dy2 = dy.reshape(-1, d)                                                 # [M, d]
        xhat = torch.mul(x2, r)                                                 # [M, d]
        dw = None
        if ctx.needs_input_grad[1]:
            dw = torch.mul(dy2, xhat).sum(0)                                    # [d]
        dx = None
        if ctx.needs_input_grad[0]:
            g = torch.mul(dy2, weight)                                          # [M, d]
            c = torch.linalg.vecdot(g, xhat, dim=-1).div_(d)                    # [M]
            dx = g.addcmul_(xhat, c[:, None], value=-1.0).mul_(r).view(ctx.lead)
        return dx, dw, None


class FastRMSNorm(torch.nn.RMSNorm):
    """``torch.nn.RMSNorm`` (same parameters, same state dict) whose CPU fp32/fp64 case with an
    affine weight and a last-dimension ``normalized_shape`` runs :class:`RMSNormFunction`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (w is not None and len(self.normalized_shape) == 1 and x.device.type == "cpu"
                and x.dtype in (torch.float32, torch.float64) and w.dtype == x.dtype):
            eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
            return RMSNormFunction.apply(x, w, eps)
        return F.rms_norm(x, self.normalized_shape, w, self.eps)
