"""LayerNorm / RMSNorm for the local (no Transformer Engine, no apex) spec, sequence-parallel aware.

megatron-core's WrappedTorchNorm refuses sequence parallelism.  With SP each TP rank normalises
its own slice of the sequence, so a norm weight's gradient is a partial sum over the sequence:
marking the parameters ``sequence_parallel = True`` makes megatron's ``finalize_model_grads``
all-reduce them over the TP group, exactly as it does for apex/TE norms.
"""
from __future__ import annotations

import torch
from megatron.core.transformer.transformer_config import TransformerConfig


class SequenceParallelNorm:
    """Factory with megatron's norm constructor signature returning a torch LayerNorm / RMSNorm."""

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **unused) -> torch.nn.Module:
        if config.normalization == "RMSNorm":
            norm = torch.nn.RMSNorm(hidden_size, eps=eps)
        elif config.normalization == "LayerNorm":
            norm = torch.nn.LayerNorm(hidden_size, eps=eps)
        else:
            raise ValueError(f"normalization={config.normalization!r}: expected LayerNorm or RMSNorm")
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm
