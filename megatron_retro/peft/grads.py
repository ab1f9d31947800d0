"""Gradient reduction of replicated PEFT factors whose per-rank gradient is partial over TP.

megatron's ``finalize_model_grads`` sums ``sequence_parallel``-marked gradients over the TP
group only when ``config.sequence_parallel`` is on; LoRA's replicated factor (column A, row B)
is partial over TP with or without SP (see :mod:`megatron_retro.peft.tp_rule`).  This wrapper
runs megatron's finalize and then sums the parameters marked ``peft_tp_partial_grad`` (the
no-SP case) over TP in one coalesced all-reduce: once per step, outside the layers.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def _grad(param):
    return getattr(param, "main_grad", None) if getattr(param, "main_grad", None) is not None else param.grad


def allreduce_peft_partial_grads(model: list, tp_group=None) -> int:
    """Sum the gradients of ``peft_tp_partial_grad`` params over TP; returns how many."""
    from megatron.core import parallel_state

    tp_group = tp_group or parallel_state.get_tensor_model_parallel_group()
    if torch.distributed.get_world_size(tp_group) <= 1:
        return 0
    grads = []
    for chunk in model:
        for param in chunk.parameters():
            if param.requires_grad and getattr(param, "peft_tp_partial_grad", False):
                g = _grad(param)
                if g is not None:
                    grads.append(g)
    if grads:
        flat = _flatten_dense_tensors([g.data for g in grads])
        torch.distributed.all_reduce(flat, group=tp_group)
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.data.copy_(synced)
    return len(grads)


def peft_finalize_model_grads(model: list, num_tokens: Optional[torch.Tensor] = None, **kwargs) -> None:
    from megatron.core.distributed import finalize_model_grads

    finalize_model_grads(model, num_tokens, **kwargs)
    allreduce_peft_partial_grads(model)


def install_peft_grad_reduction(engine) -> None:
    """Point the engine's model config at :func:`peft_finalize_model_grads`."""
    config = engine.chunks[0].config
    config.finalize_model_grads_func = peft_finalize_model_grads
