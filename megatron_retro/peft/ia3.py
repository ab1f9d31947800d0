"""IA3 (Liu et al. 2022): learned vectors that rescale attention keys, values and the MLP's inner
activations; initialised to ones (identity).

* ``linear_qkv`` (column-parallel, megatron's fused per-group layout [q_1..q_{np/ng}, k, v] x ng):
  ``ia3_key``, ``ia3_value`` [ng·hn] scale the k and v channels of its output.
* ``linear_fc2`` (row-parallel): ``ia3_input`` [ffn] scales its input (the MLP activations),
  as HF peft does on Llama's down_proj.

All vectors are sharded over TP exactly like the channels they scale (axis 0: groups for k/v,
the ffn split for fc2's input), so gradients are complete per rank and nothing is communicated.
Mergeable: the vectors fold into the rows of W_qkv and the columns of W_fc2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from megatron_retro.errors import UserError
from megatron_retro.peft.registry import PeftMethod, register_peft_method
from megatron_retro.peft.targets import find_linear_targets
from megatron_retro.peft.tp_rule import COLUMN, register_peft_param, unregister_peft_param


@dataclass
class IA3Config:
    """IA3 rescaling vectors."""

    method: ClassVar[str] = "ia3"
    targets: list = field(default_factory=lambda: ["linear_qkv", "linear_fc2"], metadata={
        "help": "linear_qkv (k, v output scaling) and/or row-parallel linears (input scaling)"})

    def __post_init__(self) -> None:
        if not self.targets:
            raise UserError("peft.targets: must name at least one linear")


def _qkv_multiplier(module, groups_local: int, q_per_group: int, hn: int) -> torch.Tensor:
    """[ng/tp · (q + 2) · hn] output scaling: ones on q channels, ia3_key / ia3_value on k / v."""
    k = module.ia3_key.view(groups_local, 1, hn)
    v = module.ia3_value.view(groups_local, 1, hn)
    q = torch.ones(groups_local, q_per_group, hn, dtype=k.dtype, device=k.device)
    return torch.cat([q, k, v], dim=1).reshape(-1)


def _qkv_hook(groups_local, q_per_group, hn):
    def hook(module, args, output):
        y, bias = output
        mult = _qkv_multiplier(module, groups_local, q_per_group, hn).to(y.dtype)
        if bias is not None:  # scale (y + bias) = y·m + bias·m
            return y * mult, bias * mult
        return y * mult, None
    return hook


def _input_hook(module, args):
    x = args[0]
    return (x * module.ia3_input.to(x.dtype),) + tuple(args[1:])


def apply_ia3(chunks: list, cfg: IA3Config, tf_config) -> list:
    tp = tf_config.tensor_model_parallel_size
    hn = tf_config.kv_channels
    groups = tf_config.num_query_groups or tf_config.num_attention_heads
    q_per_group = tf_config.num_attention_heads // groups
    if groups < tp:
        raise UserError(f"ia3: {groups} KV head(s) < parallel.tp={tp} (megatron-core splits them over the ranks); "
                        "use parallel.tp <= model.num_query_groups")
    found = []
    for chunk in chunks:
        for path, module, kind in list(find_linear_targets(chunk, cfg.targets)):
            device = module.weight.device
            if kind == COLUMN:
                if not path.endswith("linear_qkv"):
                    raise UserError(f"{path}: IA3 scales column-parallel outputs only for fused linear_qkv")
                n = groups // tp * hn
                for part in ("key", "value"):
                    register_peft_param(module, f"ia3_{part}",
                                        torch.nn.Parameter(torch.ones(n, device=device)), axis=0)
                module._ia3 = (groups // tp, q_per_group, hn)
                module.register_forward_hook(_qkv_hook(*module._ia3))
            else:
                k_local = module.weight.shape[1]
                register_peft_param(module, "ia3_input", torch.nn.Parameter(torch.ones(k_local, device=device)),
                                    axis=0)
                module.register_forward_pre_hook(_input_hook)
            found.append(module)
    return found


def ia3_param_count(cfg: IA3Config, model_cfg, retro_cfg=None) -> int:
    """k and v vectors [ng·hn] per targeted linear_qkv, an input vector [K] per row-parallel target."""
    from megatron_retro.peft.model_shapes import selected_linears

    groups = model_cfg.num_query_groups or model_cfg.num_attention_heads
    return sum(2 * groups * model_cfg.head_dim if lin.kind == "column" else lin.k
               for lin in selected_linears(model_cfg, retro_cfg, cfg.targets))


@torch.no_grad()
def merge_ia3(chunks: list) -> int:
    merged = 0
    for chunk in chunks:
        for module in list(chunk.modules()):
            params = getattr(module, "_parameters", {})
            if "ia3_key" in params:
                mult = _qkv_multiplier(module, *module._ia3)
                module.weight.mul_(mult[:, None].to(module.weight.dtype))
                if module.bias is not None:
                    module.bias.mul_(mult.to(module.bias.dtype))
                for name in ("ia3_key", "ia3_value"):
                    unregister_peft_param(module, name)
                module._forward_hooks.clear()
                merged += 1
            elif "ia3_input" in params:
                module.weight.mul_(module.ia3_input[None, :].to(module.weight.dtype))
                unregister_peft_param(module, "ia3_input")
                module._forward_pre_hooks.clear()
                merged += 1
    return merged


register_peft_method(PeftMethod(name="ia3", prefix="ia3_", config_cls=IA3Config, apply=apply_ia3,
                                count=ia3_param_count, merge=merge_ia3))
