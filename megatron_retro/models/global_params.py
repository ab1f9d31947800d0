"""A layout-independent view of a model's parameters: global names, offsets, local slices.

megatron-core's ``sharded_state_dict`` names every parameter globally (layers stacked on a
prepended axis, TP shards placed by offset) whatever the TP / PP / virtual-PP layout.  Built on
it, :func:`global_shards` lists for this rank each (key, prepended index, offsets, local view),
which gives:

* :func:`init_by_global_name` -- the same full weights for any layout (tests compare TP/PP runs
  against a single-process run of the same weights without a checkpoint round trip);
* :func:`local_grad_view` -- the slice of ``main_grad`` belonging to a shard, for comparing
  gradients across layouts.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch


@dataclass
class GlobalShard:
    key: str                       # global parameter name, e.g. decoder.layers.self_attention.linear_qkv.weight
    prefix_index: tuple[int, ...]  # index on the prepended (layer) axes
    offset: tuple[int, ...]        # offset of the local slice inside the full (unprepended) tensor
    full_shape: tuple[int, ...]    # shape of the full (unprepended) tensor
    data: torch.Tensor             # the local slice (a view of the parameter)
    param: torch.nn.Parameter      # the parameter it views


def _flatten(sd) -> Iterator:
    if isinstance(sd, dict):
        for value in sd.values():
            yield from _flatten(value)
    elif isinstance(sd, (list, tuple)):
        for value in sd:
            yield from _flatten(value)
    else:
        yield sd


def global_shards(chunks: list) -> list[GlobalShard]:
    """Every parameter slice held by this rank, under its global name (model chunks of one rank)."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    params = [p for chunk in chunks for p in chunk.parameters()]
    shards = []
    for chunk in chunks:
        for item in _flatten(chunk.sharded_state_dict()):
            if isinstance(item, ShardedTensorFactory):
                built = item.build()
                items = list(_flatten(built))
            else:
                items = [item]
            for sh in items:
                if not isinstance(sh, ShardedTensor) or not sh.data.is_floating_point():
                    continue
                param = _owning_param(sh.data, params)
                if param is None:
                    continue  # a buffer (e.g. rotary frequencies), not a parameter
                n = sh.prepend_axis_num
                shards.append(GlobalShard(
                    key=sh.key, prefix_index=tuple(sh.global_offset[:n]),
                    offset=tuple(sh.global_offset[n:]), full_shape=tuple(sh.global_shape[n:]),
                    data=sh.data, param=param))
    return shards


def _owning_param(t: torch.Tensor, params: list) -> Optional[torch.nn.Parameter]:
    ptr = t.data_ptr()
    for p in params:
        start = p.data_ptr()
        if start <= ptr < start + p.numel() * p.element_size() and p.dtype == t.dtype:
            return p
    return None


def _seed(key: str, prefix_index: tuple[int, ...], seed: int) -> int:
    digest = hashlib.sha256(f"{seed}|{key}|{prefix_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def full_tensor(shard: GlobalShard, seed: int, std: float = 0.02) -> torch.Tensor:
    """The deterministic full tensor for a shard's key (norm weights are 1 + noise)."""
    g = torch.Generator().manual_seed(_seed(shard.key, shard.prefix_index, seed))
    full = torch.randn(shard.full_shape, generator=g, dtype=torch.float64) * std
    if "norm" in shard.key and shard.key.endswith("weight"):
        full += 1.0
    return full


def local_slice(full: torch.Tensor, shard: GlobalShard) -> torch.Tensor:
    index = tuple(slice(o, o + s) for o, s in zip(shard.offset, shard.data.shape))
    return full[index]


@torch.no_grad()
def init_by_global_name(chunks: list, seed: int, std: float = 0.02) -> None:
    """Overwrite every parameter with values that depend only on its global name and position."""
    for shard in global_shards(chunks):
        shard.data.copy_(local_slice(full_tensor(shard, seed, std), shard).to(shard.data.dtype))


def local_grad_view(shard: GlobalShard) -> torch.Tensor:
    """The part of the parameter's gradient (``main_grad`` under megatron DDP) this shard covers."""
    param = shard.param
    grad = getattr(param, "main_grad", None)
    if grad is None:
        grad = param.grad
    element_offset = (shard.data.data_ptr() - param.data_ptr()) // param.element_size()
    return grad.as_strided(shard.data.shape, shard.data.stride(), grad.storage_offset() + element_offset)


def assemble_full(pairs) -> dict:
    """Full float64 tensors keyed by (key, prefix_index) from (shard, local tensor) pairs that
    together cover every shard (e.g. a TP1xPP1 rank's gradients)."""
    full = {}
    for shard, local in pairs:
        t = full.setdefault((shard.key, shard.prefix_index), torch.zeros(shard.full_shape, dtype=torch.float64))
        t[tuple(slice(o, o + n) for o, n in zip(shard.offset, local.shape))] = local
    return full


def worst_relative_error(pairs, reference: dict) -> tuple[float, str]:
    """max over shards of max|local - reference slice| / max|reference tensor|, and its key."""
    worst, worst_key = 0.0, ""
    for shard, local in pairs:
        full = reference[(shard.key, shard.prefix_index)]
        index = tuple(slice(o, o + n) for o, n in zip(shard.offset, local.shape))
        err = (local - full[index]).abs().max().item() / max(full.abs().max().item(), 1e-30)
        if err > worst:
            worst, worst_key = err, shard.key
    return worst, worst_key
