"""The one tensor-parallel sharding rule for PEFT parameters (DESIGN.md decision 5), in one place.

LoRA on a TP linear, W [N, K] split over ``tp`` ranks:

* column-parallel base (W local [N/tp, K], input replicated / all-gathered, output sharded):
  A [r, K] **replicated**, B [N/tp, r] **sharded on the output dim** (axis 0).
* row-parallel base (W local [N, K/tp], input sharded, output summed by the base's all-reduce or
  reduce-scatter): A [r, K/tp] **sharded on the input dim** (axis 1), B [N, r] **replicated**; the
  LoRA term s·(X_local·A_localᵀ)·Bᵀ is a partial sum added to X_local·W_localᵀ *before* the
  base layer's own all-reduce, so LoRA adds **no collective** to a TP layer.

Gradients of the replicated factor (column A, row B) are partial sums over the TP ranks (each
rank sees only its output shard of dY, or only its input shard of H = X·Aᵀ), with or without
sequence parallelism (the inputs they multiply are the all-gathered full sequence).  The correct
reduction is a SUM over the TP group, once per step.  megatron's ``finalize_model_grads`` sums
parameters marked ``sequence_parallel=True`` over TP **only when config.sequence_parallel** is
on (its ``average_gradients_across_tp_domain`` flag averages, which would be 1/tp too small).
So :func:`mark_tp_partial_grad` sets ``sequence_parallel=True`` under SP (megatron sums them)
and otherwise ``peft_tp_partial_grad=True``, which :mod:`megatron_retro.peft.grads` sums in a
wrapper around megatron's finalize (one coalesced all-reduce per step, outside the layers).

Every other PEFT parameter is either sharded along a TP axis (each rank owns its slice and its
gradient is complete) or replicated with a full, identical gradient on every TP rank.

:func:`peft_axes` records each injected parameter's TP axis (None = replicated) on its module;
:func:`install_sharded_state_dict` makes megatron's ``sharded_state_dict`` (checkpoints, global
names in :mod:`megatron_retro.models.global_params`) shard them accordingly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

COLUMN, ROW = "column", "row"


@dataclass(frozen=True)
class LoraLayout:
    """Local shapes and TP axes of one LoRA pair on one rank (None axis = replicated)."""

    a_shape: tuple[int, int]     # [r, K_local]
    b_shape: tuple[int, int]     # [N_local, r]
    a_axis: Optional[int]
    b_axis: Optional[int]
    partial_grad: str            # "a" (column) or "b" (row): the replicated factor


def parallel_kind(module: torch.nn.Module) -> Optional[str]:
    """'column' or 'row' for megatron's parallel linears (by type, not by name), else None."""
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear

    if isinstance(module, ColumnParallelLinear):
        return COLUMN
    if isinstance(module, RowParallelLinear):
        return ROW
    if type(module).__name__.startswith("TE") and hasattr(module, "parallel_mode"):
        from megatron_retro.errors import UserError

        raise UserError(f"{type(module).__name__}: PEFT wraps megatron's local Column/RowParallelLinear; "
                        f"build the model with model.attention_backend=sdpa for fine-tuning")
    return None


def lora_layout(kind: str, weight_local_shape: tuple[int, int], rank: int) -> LoraLayout:
    """THE rule.  ``weight_local_shape`` is this rank's [N_local, K_local] base weight."""
    n_local, k_local = weight_local_shape
    if kind == COLUMN:   # W [N/tp, K]: A replicated, B sharded on the output dim
        return LoraLayout((rank, k_local), (n_local, rank), a_axis=None, b_axis=0, partial_grad="a")
    if kind == ROW:      # W [N, K/tp]: A sharded on the input dim, B replicated
        return LoraLayout((rank, k_local), (n_local, rank), a_axis=1, b_axis=None, partial_grad="b")
    raise ValueError(f"lora_layout: unknown parallel kind {kind!r}")


def mark_tp_partial_grad(param: torch.nn.Parameter, sequence_parallel: bool,
                         partial_without_sp: bool = True) -> None:
    """A replicated parameter whose per-rank gradient is a partial sum over TP (see module doc).

    ``partial_without_sp``: True for LoRA's replicated factor (partial with or without SP);
    False for replicated parameters that see only this rank's sequence shard under SP and the
    full sequence otherwise (prompt embeddings): those need the sum only under SP.
    """
    if sequence_parallel:
        param.sequence_parallel = True     # megatron's finalize_model_grads sums these over TP
    elif partial_without_sp:
        param.peft_tp_partial_grad = True  # megatron_retro.peft.grads sums these over TP


def set_tp_axis(param: torch.nn.Parameter, axis: Optional[int]) -> None:
    """megatron's TP attributes (read by grad-norm de-duplication and checkpoint helpers)."""
    from megatron.core.tensor_parallel.layers import set_tensor_model_parallel_attributes

    if axis is not None:
        set_tensor_model_parallel_attributes(param, is_parallel=True, dim=axis, stride=1)


def peft_axes(module: torch.nn.Module) -> dict:
    """{param name on this module: TP axis or None} for the PEFT parameters injected into it."""
    axes = getattr(module, "_peft_axes", None)
    if axes is None:
        axes = {}
        module._peft_axes = axes
    return axes


def register_peft_param(module: torch.nn.Module, name: str, param: torch.nn.Parameter,
                        axis: Optional[int], gated: bool = False) -> None:
    """Add ``param`` to ``module`` under ``name`` with its TP axis; checkpoints shard it so.

    ``gated``: the axis-0 rows are two stacked halves sharded separately ([gate_r; up_r] on
    rank r, like a SwiGLU linear_fc1 weight): saved through megatron's swiglu factory so the
    global layout is [gate; up], as for the base weight.
    """
    module.register_parameter(name, param)
    set_tp_axis(param, axis)
    peft_axes(module)[name] = axis
    if gated:
        module._peft_gated = getattr(module, "_peft_gated", set()) | {name}
    install_sharded_state_dict(module)


def unregister_peft_param(module: torch.nn.Module, name: str) -> None:
    del module._parameters[name]
    peft_axes(module).pop(name, None)
    if name in getattr(module, "_peft_gated", ()):
        module._peft_gated = module._peft_gated - {name}


def _tp_group(module):
    group = getattr(module, "tp_group", None)
    if group is None:
        from megatron.core import parallel_state

        group = parallel_state.get_tensor_model_parallel_group()
    return group


def install_sharded_state_dict(module: torch.nn.Module) -> None:
    """Wrap the module's ``sharded_state_dict`` so its PEFT params carry their own TP axes."""
    if getattr(module, "_peft_ssd_installed", False):
        return
    original = module.sharded_state_dict

    def sharded_state_dict(prefix="", sharded_offsets=(), metadata=None):
        from megatron.core.transformer.utils import ensure_metadata_has_dp_cp_group, \
            make_sharded_tensors_for_checkpoint

        metadata = ensure_metadata_has_dp_cp_group(metadata)
        out = original(prefix, sharded_offsets, metadata)
        axes = peft_axes(module)
        own = {n: p for n, p in module.named_parameters(recurse=False) if n in axes}
        for n in own:
            out.pop(f"{prefix}{n}", None)
        made = make_sharded_tensors_for_checkpoint(
            own, prefix, {n: a for n, a in axes.items() if a is not None and n in own},
            sharded_offsets, tp_group=_tp_group(module), dp_cp_group=metadata["dp_cp_group"])
        for n in getattr(module, "_peft_gated", ()):
            if n in own:
                from megatron.core.transformer.mlp import apply_swiglu_sharded_factory

                made[f"{prefix}{n}"] = apply_swiglu_sharded_factory(
                    made[f"{prefix}{n}"], sharded_offsets, metadata.get("singleton_local_shards", False))
        out.update(made)
        return out

    module.sharded_state_dict = sharded_state_dict
    module._peft_ssd_installed = True
