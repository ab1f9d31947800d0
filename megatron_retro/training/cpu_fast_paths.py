"""What megatron-core leaves to CUDA extensions, done on the CPU: weight gradients accumulated
straight into DDP's fp32 ``main_grad`` buffer, a fused Adam step, in-place gradient clipping.

Notation: M tokens, K in-features, N out-features; X [M, K] a linear's input, dY [M, N] its
output gradient, G [N, K] the weight's ``main_grad`` (a view into DDP's contiguous buffer).

* Weight gradients.  Without apex's ``fused_weight_gradient_mlp_cuda`` megatron's linear writes
  dW = dYᵀ·X as a new [N, K] tensor and DDP's hook then adds it into G (``main_grad.add_``): one
  more pass over every weight gradient each step.  :func:`accumulate_wgrad_into_main_grad` turns
  on megatron's own ``gradient_accumulation_fusion`` protocol for the DDP-wrapped linears whose
  weight is trained, with a CPU implementation of its kernel: G += dYᵀ·X as one BLAS call
  (``addmm_``, beta = 1).  Only after DDP wrapping: G must exist, and a model used without the
  engine keeps megatron's plain path.
* Adam.  megatron builds ``torch.optim.AdamW`` with torch's defaults, which on CPU means the
  per-tensor loop (about ten passes over each parameter-sized tensor per step).
  :func:`use_fused_adam` switches its parameter groups to torch's fused CPU kernel (one pass; the
  same update up to fp32 rounding) when every parameter is a CPU float tensor.
* Clipping.  megatron's local stand-in for apex's ``multi_tensor_scale`` writes ``dst.copy_(src *
  scale)`` (a temporary and two passes per gradient); :func:`install_foreach_clip_scale` scales
  in place with ``torch._foreach_mul_`` when source and destination are the same tensors.
* Heap.  torch's CPU allocator has no cache: each step's activations and gradients are fresh
  ``malloc`` blocks, and glibc serves large ones (above its dynamic mmap threshold, up to 32 MiB,
  and always above that) by ``mmap``, unmapping them on ``free``; every step then page-faults
  each such tensor in again (at bench_peft's shape a fresh [2048, 8192] logits block or a SwiGLU
  gradient cost 2-6x its arithmetic).  :func:`keep_freed_heap` tells glibc (``mallopt``) to serve
  every block from the heap and never trim it, so freed pages are reused from step to step.
  Peak RSS stays the high-water mark it already was (bench_peft: within 2%).
"""
from __future__ import annotations

import ctypes
import os
import types

import torch


def _wgrad_gemm_accum(total_input: torch.Tensor, grad_output: torch.Tensor, main_grad: torch.Tensor) -> None:
    """G [N, K] += dY[M, N]ᵀ · X[M, K] (inputs of any leading shape)."""
    x = total_input.reshape(-1, total_input.shape[-1])     # [M, K]
    dy = grad_output.reshape(-1, grad_output.shape[-1])    # [M, N]
    if x.dtype == main_grad.dtype and dy.dtype == main_grad.dtype:
        main_grad.addmm_(dy.t(), x)
    else:                                                  # bf16/fp16 activations, fp32 buffer
        main_grad.add_(dy.t() @ x)


CPU_WGRAD = types.SimpleNamespace(wgrad_gemm_accum_fp32=_wgrad_gemm_accum,
                                  wgrad_gemm_accum_fp16=_wgrad_gemm_accum)


def accumulate_wgrad_into_main_grad(ddp_chunks: list) -> int:
    """Turn on gradient-accumulation fusion for the trained parallel linears of DDP-wrapped chunks
    (CPU kernel above when apex's is absent); returns how many linears use it."""
    from megatron.core.tensor_parallel import layers

    if not layers._grad_accum_fusion_available:
        if torch.cuda.is_available():
            return 0    # a GPU without apex's kernel: keep megatron's plain path there
        layers.fused_weight_gradient_mlp_cuda = CPU_WGRAD
    n = 0
    for chunk in ddp_chunks:
        for module in chunk.modules():
            w = getattr(module, "weight", None)
            if (isinstance(module, (layers.ColumnParallelLinear, layers.RowParallelLinear))
                    and isinstance(w, torch.nn.Parameter) and w.requires_grad and hasattr(w, "main_grad")
                    and hasattr(w, "grad_added_to_main_grad")):
                module.gradient_accumulation_fusion = True
                n += 1
    return n


def use_fused_adam(optimizer) -> int:
    """Switch the torch Adam/AdamW groups under a megatron optimizer to torch's fused kernel when
    all their parameters are CPU floating tensors; returns how many groups switched."""
    n = 0
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if not isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)):
            continue
        for group in inner.param_groups:
            params = group["params"]
            if params and all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64)
                              for p in params) and not group.get("differentiable") \
                    and not group.get("capturable"):
                group["fused"], group["foreach"] = True, False
                n += 1
    return n


def _foreach_scale(chunk_size, noop_flag, tensor_lists, scale):
    """megatron's ``local_multi_tensor_scale`` (dst = src·scale), in place when dst is src."""
    src, dst = tensor_lists
    if all(s is d for s, d in zip(src, dst)):
        torch._foreach_mul_(list(dst), scale)
    else:
        for s, d in zip(src, dst):
            torch.mul(s, scale, out=d)


def install_foreach_clip_scale() -> None:
    """Route megatron's gradient clipping through :func:`_foreach_scale` when it uses the local
    (no apex / TE) multi-tensor scale."""
    from megatron.core.optimizer import clip_grads
    from megatron.core.utils import local_multi_tensor_scale

    if getattr(clip_grads, "multi_tensor_scale_impl", None) is local_multi_tensor_scale:
        clip_grads.multi_tensor_scale_impl = _foreach_scale


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4            # glibc's mallopt parameter numbers (malloc.h)
_USER_ALLOCATOR_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                       "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def keep_freed_heap() -> bool:
    """glibc only: no ``mmap``-served blocks and no heap trimming, so that memory freed by one step
    is reused by the next without page faults (see the module docstring).  Left alone when the
    user chose an allocator policy (``MALLOC_*`` / ``GLIBC_TUNABLES`` variables, or an allocator
    in ``LD_PRELOAD`` such as jemalloc or tcmalloc).  Returns whether the policy was set."""
    if any(os.environ.get(k) for k in _USER_ALLOCATOR_ENV) or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    from megatron_retro.glibc import libc_function

    mallopt = libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # trim threshold: the largest int (glibc stores it as size_t; 2 GiB of free top never occurs here)
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
