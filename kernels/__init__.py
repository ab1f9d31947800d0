"""Triton kernels for megatron_retro, each with a plain-torch reference and path dispatch.

Installed as `megatron_retro.kernels` (the source folder is the top-level `kernels/`).  Pure ops:
nothing here imports the rest of megatron_retro.

- `fused_lora_linear(x, weight, lora_a, lora_b, scale, bias=None, dropout_p=0.0)`:
  y = x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ (+ bias) with frozen W (fused_lora.py).
- `chunked_cross_attention(q, k, v, chunk_length=64, softmax_scale=None, dropout_p=0.0)`:
  RETRO chunked cross-attention with the causal shift done by indexing
  (chunked_cross_attention.py).
- `nf4_dequantize(...)` / `nf4_quantize(...)`: QLoRA 4-bit NormalFloat weights (nf4.py).

Every op takes `backend="auto" | "triton" | "torch"`; `*_dispatch(...)` returns
`Dispatch(use_triton, reason)` for the same arguments and `*_can_use_triton(...)` the kernel's
own support check.  "auto" runs Triton on CUDA tensors when supported, else the torch reference.
"""
from ._dispatch import Dispatch, interpreter_active
from .chunked_cross_attention import (
    chunk_pad,
    chunked_cross_attention,
    chunked_cross_attention_can_use_triton,
    chunked_cross_attention_dispatch,
    chunked_cross_attention_reference,
    neighbours_as_kv,
    num_chunks,
)
from .fused_lora import (
    fused_lora_can_use_triton,
    fused_lora_dispatch,
    fused_lora_linear,
    fused_lora_reference,
)
from .nf4 import (
    nf4_can_use_triton,
    nf4_dequantize,
    nf4_dequantize_reference,
    nf4_dispatch,
    nf4_quantize,
)

__all__ = [
    "Dispatch", "interpreter_active",
    "chunk_pad", "num_chunks", "neighbours_as_kv", "chunked_cross_attention",
    "chunked_cross_attention_can_use_triton", "chunked_cross_attention_dispatch",
    "chunked_cross_attention_reference",
    "fused_lora_linear", "fused_lora_can_use_triton", "fused_lora_dispatch",
    "fused_lora_reference",
    "nf4_quantize", "nf4_dequantize", "nf4_dequantize_reference", "nf4_can_use_triton",
    "nf4_dispatch",
]
