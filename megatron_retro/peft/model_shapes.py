"""The global module paths and full linear shapes of a GPT or RETRO model, from its config alone.

PEFT methods count their trainable parameters by formula over this list (selected with the same
target patterns they apply, :func:`megatron_retro.peft.targets.path_selected`), so a method's
count is known without building the model, for GPT and RETRO alike.

Paths are the *global* paths of :func:`megatron_retro.peft.targets.global_path` (0-based global
layer index).  RETRO (models/retro): a retrieval layer (1-based number in
``retro.layer_numbers``) adds ``cross_attention.{linear_q [d -> h·hn], linear_kv [d -> 2·h·hn],
linear_proj [h·hn -> d]}``; the first one also holds the neighbour encoder,
``decoder.layers.<i>.cross_attention.encoder.layers.<j>.*``, whose layers are GPT layers plus
the same cross-attention projections.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Linear:
    path: str    # global path, e.g. decoder.layers.3.self_attention.linear_qkv
    kind: str    # "column" | "row"
    k: int       # full in-features
    n: int       # full out-features


def _gpt_layer(prefix: str, model_cfg) -> tuple[list[Linear], list[str]]:
    d, hn = model_cfg.hidden_size, model_cfg.head_dim
    heads = model_cfg.num_attention_heads
    groups = model_cfg.num_query_groups or heads
    ffn = model_cfg.ffn_size
    fc1_out = 2 * ffn if model_cfg.gated_mlp else ffn
    linears = [Linear(f"{prefix}.self_attention.linear_qkv", "column", d, (heads + 2 * groups) * hn),
               Linear(f"{prefix}.self_attention.linear_proj", "row", heads * hn, d),
               Linear(f"{prefix}.mlp.linear_fc1", "column", d, fc1_out),
               Linear(f"{prefix}.mlp.linear_fc2", "row", ffn, d)]
    modules = [f"{prefix}.self_attention", f"{prefix}.self_attention.core_attention", f"{prefix}.mlp"]
    return linears, modules


def _cross_attention(prefix: str, model_cfg) -> tuple[list[Linear], list[str]]:
    d, inner = model_cfg.hidden_size, model_cfg.num_attention_heads * model_cfg.head_dim
    linears = [Linear(f"{prefix}.cross_attention.linear_q", "column", d, inner),
               Linear(f"{prefix}.cross_attention.linear_kv", "column", d, 2 * inner),
               Linear(f"{prefix}.cross_attention.linear_proj", "row", inner, d)]
    return linears, [f"{prefix}.cross_attention"]


def model_layout(model_cfg, retro_cfg: Optional[object] = None) -> tuple[list[Linear], list[str]]:
    """(every parallel linear of the transformer layers, every sub-layer module path)."""
    linears, modules = [], []
    retrieval = retro_cfg.layer_numbers(model_cfg.num_layers) if retro_cfg is not None else []
    for i in range(model_cfg.num_layers):
        prefix = f"decoder.layers.{i}"
        for part in [_gpt_layer(prefix, model_cfg)] + ([_cross_attention(prefix, model_cfg)]
                                                       if i + 1 in retrieval else []):
            linears += part[0]
            modules += part[1]
        if retrieval and i + 1 == retrieval[0]:
            for j in range(retro_cfg.encoder_num_layers):
                enc = f"{prefix}.cross_attention.encoder.layers.{j}"
                for part in (_gpt_layer(enc, model_cfg), _cross_attention(enc, model_cfg)):
                    linears += part[0]
                    modules += part[1]
    return linears, modules


def selected_linears(model_cfg, retro_cfg, targets, exclude=()) -> list[Linear]:
    from megatron_retro.peft.targets import path_selected

    return [lin for lin in model_layout(model_cfg, retro_cfg)[0] if path_selected(lin.path, targets, exclude)]


def selected_modules(model_cfg, retro_cfg, targets, exclude=()) -> list[str]:
    from megatron_retro.peft.targets import path_selected

    return [m for m in model_layout(model_cfg, retro_cfg)[1] if path_selected(m, targets, exclude)]
