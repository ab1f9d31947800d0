"""LayerNorm / RMSNorm for the local (no Transformer Engine, no apex) spec, sequence-parallel aware.

megatron-core's WrappedTorchNorm refuses sequence parallelism.  With SP each TP rank normalises
its own slice of the sequence, so a norm weight's gradient is a partial sum over the sequence:
marking the parameters ``sequence_parallel = True`` makes megatron's ``finalize_model_grads``
all-reduce them over the TP group, exactly as it does for apex/TE norms.
"""
from __future__ import annotations

import torch
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_retro.models.rmsnorm import FastRMSNorm


class ZeroCenteredRMSNorm(torch.nn.Module):
    """RMSNorm scaled by (1 + w), w initialised to 0 (Gemma's; megatron's
    ``layernorm_zero_centered_gamma``). Computed in fp32 and cast back, as Gemma does."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., h] -> [..., h]
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).type_as(x)


class SequenceParallelNorm:
    """Factory with megatron's norm constructor signature returning a torch LayerNorm / RMSNorm."""

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **unused) -> torch.nn.Module:
        if config.normalization == "RMSNorm" and config.layernorm_zero_centered_gamma:
            norm = ZeroCenteredRMSNorm(hidden_size, eps=eps)
        elif config.normalization == "RMSNorm":
            norm = FastRMSNorm(hidden_size, eps=eps)
        elif config.normalization == "LayerNorm":
            norm = torch.nn.LayerNorm(hidden_size, eps=eps)
        else:
            raise ValueError(f"normalization={config.normalization!r}: expected LayerNorm or RMSNorm")
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm
