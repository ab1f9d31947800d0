"""Public PEFT entry points: apply a method, count trainable params, adapter state dicts, merge.

``apply_peft(chunks, cfg)`` freezes every base parameter and lets the configured method inject
its parameters (named with the method's prefix).  ``peft_state_dict`` / ``load_peft_state_dict``
exchange *full, unsharded* adapter tensors keyed by global name (layer index included), so an
adapter saved at one TP/PP layout loads at any other.  All functions taking ``chunks`` work on
this rank's model chunks (unwrapped or megatron-DDP-wrapped); the state-dict ones are collective.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.distributed as dist

from megatron_retro.errors import UserError
from megatron_retro.peft.registry import get_method, is_peft_param_name


def unwrap(chunk):
    while hasattr(chunk, "module"):
        chunk = chunk.module
    return chunk


def method_of(cfg) -> str:
    return type(cfg).method


def apply_peft(chunks: list, cfg) -> list:
    """Freeze the base, inject the method's parameters; returns the chunks (modified in place)."""
    chunks = [unwrap(c) for c in chunks]
    method = get_method(method_of(cfg))
    for chunk in chunks:
        for p in chunk.parameters():
            p.requires_grad_(False)
    tf_config = chunks[0].config
    method.apply(chunks, cfg, tf_config)
    for chunk in chunks:
        applied = getattr(chunk, "_peft_methods", [])
        chunk._peft_methods = applied + [(method.name, cfg)]
        for name, p in chunk.named_parameters():
            if p.requires_grad and not is_peft_param_name(name, (method.prefix,)):
                raise AssertionError(f"apply_peft: {name} requires grad but is not a {method.prefix} parameter")
    return chunks


def trainable_parameters(chunks: list) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for c in chunks for n, p in unwrap(c).named_parameters() if p.requires_grad]


def peft_method_count(cfg, model_cfg, retro_cfg=None) -> int:
    """The method's formula for its global trainable-parameter count (RETRO: pass its RetroConfig)."""
    return get_method(method_of(cfg)).count(cfg, model_cfg, retro_cfg)


# --------------------------------------------------------------------------------------------
# Layout-independent adapter state
# --------------------------------------------------------------------------------------------
def global_name(shard) -> str:
    """``decoder.layers.self_attention.linear_qkv.lora_a`` + layer (3,) -> ``decoder.layers.3.…``."""
    if not shard.prefix_index:
        return shard.key
    index = ".".join(str(i) for i in shard.prefix_index)
    head, sep, tail = shard.key.partition("layers.")
    return f"{head}layers.{index}.{tail}" if sep else f"{shard.key}@{index}"


def peft_shards(chunks: list) -> list:
    from megatron_retro.models.global_params import global_shards

    return [s for s in global_shards([unwrap(c) for c in chunks]) if is_peft_param_name(s.key)]


def all_gather_objects(obj) -> list:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def peft_state_dict(chunks: list) -> dict[str, torch.Tensor]:
    """Collective: {global name: full fp32 tensor} of every PEFT parameter, on every rank."""
    pieces = [(global_name(s), s.full_shape, s.offset, s.data.detach().float().cpu().clone())
              for s in peft_shards(chunks)]
    full: dict[str, torch.Tensor] = {}
    for rank_pieces in all_gather_objects(pieces):
        for name, shape, offset, data in rank_pieces:
            t = full.setdefault(name, torch.zeros(shape, dtype=torch.float32))
            t[tuple(slice(o, o + n) for o, n in zip(offset, data.shape))] = data
    return dict(sorted(full.items()))


@torch.no_grad()
def load_peft_state_dict(chunks: list, state: dict[str, torch.Tensor], source: str = "adapter") -> None:
    """Collective: copy this rank's slices of the full tensors in ``state`` into the PEFT params."""
    shards = peft_shards(chunks)
    used = set()
    for s in shards:
        name = global_name(s)
        if name not in state:
            raise UserError(f"{source}: missing adapter tensor {name} (was it saved for another method or targets?)")
        full = state[name]
        if tuple(full.shape) != tuple(s.full_shape):
            raise UserError(f"{source}: {name} has shape {tuple(full.shape)}, the model needs {tuple(s.full_shape)}")
        index = tuple(slice(o, o + n) for o, n in zip(s.offset, s.data.shape))
        s.data.copy_(full[index].to(s.data.dtype))
        used.add(name)
    covered = set().union(*all_gather_objects(used))
    unexpected = sorted(set(state) - covered)
    if unexpected:
        raise UserError(f"{source}: adapter tensor {unexpected[0]} (and {len(unexpected) - 1} more) "
                        f"has no place in this model")


def merge_peft(chunks: list) -> int:
    """Fold every mergeable PEFT method into the base weights (no communication); returns modules merged."""
    merged = 0
    chunks = [unwrap(c) for c in chunks]
    names = {name for c in chunks for name, _ in getattr(c, "_peft_methods", [])}
    for name in names:
        method = get_method(name)
        if method.merge is None:
            raise UserError(f"peft merge: method {name!r} cannot be merged into the base weights")
        merged += method.merge(chunks)
    for c in chunks:
        c._peft_methods = []
    return merged


def config_to_dict(cfg) -> dict:
    return {"method": method_of(cfg), **dataclasses.asdict(cfg)}


def config_from_dict(data: dict, where: str = "peft config"):
    data = dict(data)
    name = data.pop("method", None)
    if name is None:
        raise UserError(f"{where}: missing 'method'")
    cls = get_method(name).config_cls
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise UserError(f"{where}: peft.{key}: unknown option for method {name} (known: {', '.join(sorted(known))})")
    return cls(**data)


def make_peft_config(method: str, options: Optional[dict] = None):
    return config_from_dict({"method": method, **(options or {})}, where="--peft")
