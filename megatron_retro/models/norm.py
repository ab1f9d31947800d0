"""LayerNorm / RMSNorm for the local (no Transformer Engine, no apex) spec, sequence-parallel aware.

megatron-core's WrappedTorchNorm refuses sequence parallelism.  With SP each TP rank normalises
its own slice of the sequence, so a norm weight's gradient is a partial sum over the sequence:
marking the parameters ``sequence_parallel = True`` makes megatron's ``finalize_model_grads``
all-reduce them over the TP group, exactly as it does for apex/TE norms.

RMSNorm (plain, and Gemma's zero-centred (1 + w) form) is one autograd op, :class:`RMSNormFunction`.
Notation: x [..., h] the input, r = rsqrt(mean(x²) + eps) [..., 1], γ = w (+ 1 when zero-centred),
x̂ = x·r, y = x̂·γ.  Backward, with dy [..., h]:

    dx = r·(dy·γ) - x · r³·mean(dy·γ·x)        dw = Σ_rows dy·x̂  (only when w is trained)

Only x (usually the previous op's saved output anyway) and r are kept for backward; composed from
torch ops the same norm keeps x², x̂ and y·γ's inputs (three more [.., h] tensors) and runs about
ten elementwise passes.  Computed in fp32 and cast back (Gemma's and Llama's rule).
"""
from __future__ import annotations

import torch
from megatron.core.transformer.transformer_config import TransformerConfig


class RMSNormFunction(torch.autograd.Function):
    """(x [..., h], w [h]) -> x·rsqrt(mean(x²) + eps)·(w + offset); see the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, eps: float, offset: float):
        acc = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(acc)
        h = x.shape[-1]
        r = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square_().div_(h).add_(eps).rsqrt_()  # [..., 1]
        gamma = weight.to(acc) + offset if offset else weight.to(acc)                                  # [h]
        y = torch.mul(xf, r).mul_(gamma)
        ctx.offset = offset
        ctx.save_for_backward(x, r, weight)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, r, weight = ctx.saved_tensors
        acc = torch.promote_types(x.dtype, torch.float32)
        xf, dyf = x.to(acc), dy.to(acc)
        h = x.shape[-1]
        gamma = weight.to(acc) + ctx.offset if ctx.offset else weight.to(acc)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dyg = dyf * gamma                                                 # [..., h]
            coef = torch.linalg.vecdot(dyg, xf).unsqueeze(-1).mul_(r.pow(3)).div_(-h)  # -r³·mean(dy·γ·x)
            dx = dyg.mul_(r).addcmul_(xf, coef).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dw = torch.mul(xf, r).mul_(dyf).reshape(-1, h).sum(0).to(weight.dtype)
        return dx, dw, None, None


class FusedRMSNorm(torch.nn.Module):
    """RMSNorm through :class:`RMSNormFunction`; ``zero_centered``: scaled by (1 + w), w initialised
    to 0 (Gemma's; megatron's ``layernorm_zero_centered_gamma``), else by w initialised to 1."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, zero_centered: bool = False) -> None:
        super().__init__()
        self.eps, self.offset = eps, 1.0 if zero_centered else 0.0
        self.weight = torch.nn.Parameter(torch.zeros(hidden_size) if zero_centered else torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., h] -> [..., h]
        return RMSNormFunction.apply(x, self.weight, self.eps, self.offset)


def ZeroCenteredRMSNorm(hidden_size: int, eps: float = 1e-6) -> FusedRMSNorm:
    """Gemma's RMSNorm: (1 + w)·x̂ with w = 0 at init."""
    return FusedRMSNorm(hidden_size, eps=eps, zero_centered=True)


class SequenceParallelNorm:
    """Factory with megatron's norm constructor signature returning a torch LayerNorm / RMSNorm."""

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **unused) -> torch.nn.Module:
        if config.normalization == "RMSNorm":
            norm = FusedRMSNorm(hidden_size, eps=eps, zero_centered=config.layernorm_zero_centered_gamma)
        elif config.normalization == "LayerNorm":
            norm = torch.nn.LayerNorm(hidden_size, eps=eps)
        else:
            raise ValueError(f"normalization={config.normalization!r}: expected LayerNorm or RMSNorm")
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm
