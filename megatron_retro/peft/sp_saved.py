"""Under sequence parallelism, keep only this rank's sequence shard of a LoRA layer's input.

A column-parallel LoRA linear under SP all-gathers its input, x_local [s/tp, b, K] ->
x [s, b, K], and the LoRA branch needs x again in backward (dA = dHᵀ·x; the fused kernel saves
it).  Saving the gathered x would cost tp x the activation memory of megatron's own linear,
which saves x_local and all-gathers again in backward.  :func:`save_sequence_shard` gives the
LoRA branch the same rule: inside it, any tensor autograd saves that lives in x's storage is
stored as x_local (plus its view geometry) and re-gathered over the TP group when backward
unpacks it.  Every TP rank unpacks the same saved tensors in the same order, so the extra
all-gathers match up across ranks.
"""
from __future__ import annotations

import contextlib

import torch


class _Regather:
    """What is saved instead of a view of the gathered input: the local shard and the view."""

    __slots__ = ("local", "group", "shape", "stride", "offset")

    def __init__(self, local, group, view):
        self.local, self.group = local, group
        self.shape, self.stride, self.offset = view.shape, view.stride(), view.storage_offset()

    def unpack(self) -> torch.Tensor:
        from megatron.core.tensor_parallel.mappings import _gather_along_first_dim

        full = _gather_along_first_dim(self.local, self.group).contiguous()   # [s, b, K]
        return full.as_strided(self.shape, self.stride, self.offset)


@contextlib.contextmanager
def save_sequence_shard(local: torch.Tensor, gathered: torch.Tensor, group):
    """While active, tensors saved for backward that view ``gathered`` (the SP all-gather of
    ``local`` along dim 0, a fresh contiguous tensor) are kept as ``local`` and re-gathered."""
    with torch.autograd.graph.saved_tensors_hooks(*hooks(local, gathered, group)):
        yield


def hooks(local: torch.Tensor, gathered: torch.Tensor, group):
    """(pack, unpack) of :func:`save_sequence_shard` (tests wrap them to measure what is kept)."""
    storage = gathered.untyped_storage().data_ptr()
    shard = local.detach()

    def pack(t):
        if t.device == gathered.device and t.untyped_storage().data_ptr() == storage:
            return _Regather(shard, group, t)
        return t

    def unpack(saved):
        return saved.unpack() if isinstance(saved, _Regather) else saved

    return pack, unpack
