"""LoRA on megatron parallel linears: y = x·Wᵀ + s·(drop(x)·Aᵀ)·Bᵀ with W frozen.

Notation: K in-features, N out-features (full), r rank, s = alpha / r (alpha / sqrt(r) with
rsLoRA), tp tensor-parallel size.  Shapes per rank follow the one rule in
:mod:`megatron_retro.peft.tp_rule`: column-parallel base -> A [r, K] replicated, B [N/tp, r];
row-parallel base -> A [r, K/tp], B [N, r] replicated.

The wrapped forward does exactly the communication of the base layer and nothing more:
column: (all-gather of the sequence under SP | identity with an all-reduce of dX in backward),
then one ``fused_lora_linear`` for base + LoRA on the local shard; row: one ``fused_lora_linear``
on the local input shard giving the partial output (LoRA partial sum included), then the base
layer's own all-reduce (or reduce-scatter under SP).  On CUDA ``fused_lora_linear`` runs the
Triton kernel (base GEMM and LoRA in one pass, no dW for the frozen base), on CPU the torch
reference; :func:`lora_dispatch` says which and why.
"""
from __future__ import annotations

import contextlib
import math
import types
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from megatron_retro.errors import UserError
from megatron_retro.peft.options import check_count, check_positive
from megatron_retro.peft.registry import PeftMethod, register_peft_method
from megatron_retro.peft.targets import find_linear_targets, global_path, seeded_full, tp_slice
from megatron_retro.peft.tp_rule import (COLUMN, lora_layout, mark_tp_partial_grad, register_peft_param,
                                         unregister_peft_param)

DEFAULT_TARGETS = ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]


@dataclass
class LoraConfig:
    """LoRA hyper-parameters and targets."""

    method: ClassVar[str] = "lora"
    rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    alpha: float = field(default=8.0, metadata={"help": "LoRA alpha; scale = alpha / r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    rslora: bool = field(default=False, metadata={"help": "rank-stabilised scale alpha / sqrt(r)"})
    init: str = field(default="kaiming", metadata={
        "help": "A init: 'kaiming' (uniform ±1/sqrt(K), HF peft's default) or 'gaussian' (N(0, 1/r)); B = 0"})
    targets: list = field(default_factory=lambda: list(DEFAULT_TARGETS), metadata={
        "help": "module names / path globs of parallel linears to adapt (see peft/targets.py)"})
    exclude: list = field(default_factory=list, metadata={"help": "path globs to leave out"})
    seed: int = field(default=1234, metadata={"help": "seed of the layout-independent A init"})

    def __post_init__(self) -> None:
        check_count(self, "rank")
        check_positive(self, "alpha")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"peft.dropout={self.dropout}: must be in [0, 1)")
        if self.init not in ("kaiming", "gaussian"):
            raise UserError(f"peft.init={self.init!r}: must be 'kaiming' or 'gaussian'")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise UserError(f"peft.targets={self.targets!r}: must be a non-empty list of names")

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)


# --------------------------------------------------------------------------------------------
# Forwards (bound to the base module instance; `self` is the Column/RowParallelLinear)
# --------------------------------------------------------------------------------------------
def _base_weight(self) -> torch.Tensor:
    """The frozen base weight (QLoRA dequantises it here)."""
    getter = getattr(self, "_peft_base_weight", None)
    return getter() if getter is not None else self.weight


def _lora_term_args(self):
    p = self._lora_dropout if self.training else 0.0
    return self.lora_a, self.lora_b, self._lora_scale, p


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous.  megatron's ``_reduce``
    all-reduces ``input_.contiguous()`` and returns ``input_``: a strided tensor (the folded LoRA
    path's Y or dX, kernels/lora_torch.py) would come back unreduced."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, dx):
        return dx.contiguous()


def _column_forward(self, input_, weight=None, runtime_gather_output=None):
    """ColumnParallelLinear + LoRA: same collectives as the base layer."""
    from megatron.core.tensor_parallel.mappings import (copy_to_tensor_model_parallel_region,
                                                        gather_from_sequence_parallel_region,
                                                        gather_from_tensor_model_parallel_region)

    from megatron_retro.kernels import fused_lora_linear

    from megatron_retro.peft.sp_saved import save_sequence_shard

    w = _base_weight(self) if weight is None else weight
    saving = contextlib.nullcontext()
    if self.sequence_parallel:   # [s/tp, b, K] -> [s, b, K]; backward reduce-scatters dX
        x = gather_from_sequence_parallel_region(input_, tensor_parallel_output_grad=True, group=self.tp_group)
        saving = save_sequence_shard(input_, x, self.tp_group)   # keep [s/tp, b, K], re-gather in backward
    elif self.allreduce_dgrad:   # identity; backward all-reduces dX (base path + LoRA path)
        # megatron's all-reduce reduces a contiguous copy of a strided gradient and returns the
        # unreduced original: hand it dX contiguous (the folded torch path's dX is a strided view)
        x = _ContiguousGrad.apply(copy_to_tensor_model_parallel_region(input_, group=self.tp_group))
    else:
        x = input_
    a, b, scale, p = _lora_term_args(self)
    bias = self.bias if not self.skip_bias_add else None
    with saving:
        y = fused_lora_linear(x, w, a, b, scale, bias=bias, dropout_p=p)  # [s, b, N/tp]
    gather = self.gather_output if runtime_gather_output is None else runtime_gather_output
    if gather:
        y = gather_from_tensor_model_parallel_region(y, group=self.tp_group)
    return y, (self.bias if self.skip_bias_add else None)


def _row_forward(self, input_):
    """RowParallelLinear + LoRA: the LoRA partial sum joins the base all-reduce / reduce-scatter."""
    from megatron.core import tensor_parallel
    from megatron.core.utils import get_pg_size
    from megatron.core.tensor_parallel.mappings import (reduce_from_tensor_model_parallel_region,
                                                        reduce_scatter_to_sequence_parallel_region,
                                                        scatter_to_tensor_model_parallel_region)

    from megatron_retro.kernels import fused_lora_linear

    x = input_ if self.input_is_parallel else scatter_to_tensor_model_parallel_region(input_, group=self.tp_group)
    a, b, scale, p = _lora_term_args(self)
    if p > 0.0:  # input shards differ per TP rank: draw masks from the model-parallel RNG
        with tensor_parallel.get_cuda_rng_tracker().fork():
            y = fused_lora_linear(x, _base_weight(self), a, b, scale, dropout_p=p)
    else:
        y = fused_lora_linear(x, _base_weight(self), a, b, scale)  # [s, b, N] partial over TP
    if self.sequence_parallel:
        y = reduce_scatter_to_sequence_parallel_region(y, group=self.tp_group)
    else:   # contiguous under TP: megatron's all-reduce returns a strided input unreduced (see _ContiguousGrad)
        y = y.contiguous() if get_pg_size(self.tp_group) > 1 else y
        y = reduce_from_tensor_model_parallel_region(y, group=self.tp_group)
    if not self.skip_bias_add:
        return (y + self.bias if self.bias is not None else y), None
    return y, self.bias


def lora_dispatch(module: torch.nn.Module, x: torch.Tensor):
    """The kernel path (`Dispatch(use_triton, reason)`) the module's LoRA takes for input ``x``."""
    from megatron_retro.kernels import fused_lora_dispatch

    p = module._lora_dropout if module.training else 0.0
    return fused_lora_dispatch(x, _base_weight(module), module.lora_a, module.lora_b, dropout_p=p)


# --------------------------------------------------------------------------------------------
# Inject, count, merge
# --------------------------------------------------------------------------------------------
def _init_a(cfg: LoraConfig, k_full: int):
    def fill(t, g):
        if cfg.init == "kaiming":
            bound = 1.0 / math.sqrt(k_full)
            t.uniform_(-bound, bound, generator=g)
        else:
            t.normal_(0.0, 1.0 / cfg.rank, generator=g)
    return fill


def inject_lora(module: torch.nn.Module, kind: str, cfg: LoraConfig, name: str, sequence_parallel: bool,
                tp: int, gated: bool = False) -> None:
    """Add lora_a / lora_b (fp32) to one parallel linear and switch its forward."""
    if hasattr(module, "lora_a"):
        raise UserError(f"{name}: LoRA is already applied")
    w = _base_weight(module)
    layout = lora_layout(kind, tuple(w.shape), cfg.rank)
    k_full = layout.a_shape[1] * (tp if layout.a_axis == 1 else 1)
    full_a = seeded_full((cfg.rank, k_full), cfg.seed, name, _init_a(cfg, k_full))
    a = torch.nn.Parameter(tp_slice(full_a, layout.a_axis, layout.a_shape[1]).to(w.device))
    b = torch.nn.Parameter(torch.zeros(layout.b_shape, dtype=torch.float32, device=w.device))
    register_peft_param(module, "lora_a", a, layout.a_axis)
    register_peft_param(module, "lora_b", b, layout.b_axis, gated=gated and layout.b_axis == 0)
    mark_tp_partial_grad(a if layout.partial_grad == "a" else b, sequence_parallel)
    module._lora_scale = cfg.scale
    module._lora_dropout = cfg.dropout
    module.forward = types.MethodType(_column_forward if kind == COLUMN else _row_forward, module)


def apply_lora(chunks: list, cfg: LoraConfig, tf_config) -> list:
    tp = tf_config.tensor_model_parallel_size
    found = []
    for chunk in chunks:
        for path, module, kind in find_linear_targets(chunk, cfg.targets, cfg.exclude):
            # a gated MLP's linear_fc1 stacks [gate_r; up_r] per rank: B's rows follow that layout
            gated = tf_config.gated_linear_unit and path.endswith("mlp.linear_fc1")
            inject_lora(module, kind, cfg, global_path(chunk, path), tf_config.sequence_parallel, tp, gated)
            found.append(module)
    if not found and any(len(getattr(getattr(c, "decoder", None), "layers", [])) for c in chunks):
        raise UserError(f"peft.targets={cfg.targets}: no parallel linear in the model matches")
    return found


def lora_param_count(cfg: LoraConfig, model_cfg, retro_cfg=None) -> int:
    """r·(K + N) per adapted linear of the transformer layers (global count; GPT or RETRO)."""
    from megatron_retro.peft.model_shapes import selected_linears

    return sum(cfg.rank * (lin.k + lin.n) for lin in selected_linears(model_cfg, retro_cfg, cfg.targets, cfg.exclude))


@torch.no_grad()
def merge_lora_module(module: torch.nn.Module) -> None:
    """W_local += s·B_local·A_local (shapes follow the TP rule: no communication), then un-inject."""
    w = module.weight
    delta = module._lora_scale * (module.lora_b.double() @ module.lora_a.double())  # [N_local, K_local]
    w.add_(delta.to(w.dtype))
    remove_lora(module)


def remove_lora(module: torch.nn.Module) -> None:
    for name in ("lora_a", "lora_b"):
        unregister_peft_param(module, name)
    del module.forward  # back to the class's forward
    for attr in ("_lora_scale", "_lora_dropout"):
        delattr(module, attr)


def merge_lora(chunks: list) -> int:
    merged = 0
    for chunk in chunks:
        for module in list(chunk.modules()):
            if "lora_a" in getattr(module, "_parameters", {}):
                merge_lora_module(module)
                merged += 1
    return merged


register_peft_method(PeftMethod(name="lora", prefix="lora_", config_cls=LoraConfig, apply=apply_lora,
                                count=lora_param_count, merge=merge_lora))
