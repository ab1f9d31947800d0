"""LayerNorm / RMSNorm for the local (no Transformer Engine, no apex) spec, sequence-parallel aware.

megatron-core's WrappedTorchNorm refuses sequence parallelism.  With SP each TP rank normalises
its own slice of the sequence, so a norm weight's gradient is a partial sum over the sequence:
marking the parameters ``sequence_parallel = True`` makes megatron's ``finalize_model_grads``
all-reduce them over the TP group, exactly as it does for apex/TE norms.

RMSNorm (plain, and Gemma's zero-centred (1 + w) form) is one autograd op: models/rmsnorm.py.
"""
from __future__ import annotations

import torch
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_retro.models.rmsnorm import FastRMSNorm


class SequenceParallelNorm:
    """Factory with megatron's norm constructor signature returning a torch LayerNorm / RMSNorm."""

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **unused) -> torch.nn.Module:
        if config.normalization == "RMSNorm":
            norm = FastRMSNorm(hidden_size, eps=eps, zero_centered=config.layernorm_zero_centered_gamma)
        elif config.normalization == "LayerNorm":
            norm = torch.nn.LayerNorm(hidden_size, eps=eps)
        else:
            raise ValueError(f"normalization={config.normalization!r}: expected LayerNorm or RMSNorm")
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm
