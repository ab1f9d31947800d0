"""Prefix tuning / P-tuning v2 (Li & Liang 2021; Liu et al. 2022): learned per-layer key/value
prefixes that every query attends to, on every pipeline stage.

Each targeted core attention (``core_attention`` under ``self_attention`` by default) gets
``prefix_key`` and ``prefix_value`` [p, ng, hn] (p prefix length, ng key/value groups, hn head
width), sharded over TP on the group axis like the heads themselves, so every rank owns its
slice and its gradient is complete; no communication.  The wrapped core attention receives
[sk, b, ng/tp, hn] keys/values and prepends the prefix: [p + sk, b, ng/tp, hn].  With the
default causal mask, SDPAttention aligns the sq queries with the *last* sq keys (the same
bottom-right causal alignment it uses for KV-cached decoding), so every query sees all p
prefixes; an explicit mask [b, 1, sq, sk] (True = masked) gets p unmasked columns in front.
Prefixes carry no rotary embedding (they have no position).
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from megatron_retro.errors import UserError
from megatron_retro.peft.options import check_count, check_positive
from megatron_retro.peft.registry import PeftMethod, register_peft_method
from megatron_retro.peft.targets import find_modules, global_path, seeded_full, tp_slice
from megatron_retro.peft.tp_rule import register_peft_param


@dataclass
class PrefixConfig:
    """Per-layer key/value prefixes."""

    method: ClassVar[str] = "prefix"
    num_prefix_tokens: int = field(default=10, metadata={"help": "prefix length p per layer"})
    init_std: float = field(default=0.02, metadata={"help": "std of the normal init"})
    targets: list = field(default_factory=lambda: ["self_attention.core_attention"], metadata={
        "help": "core attentions that take prefixes (RETRO: add 'cross_attention.core_attention' if wanted)"})
    seed: int = field(default=1234, metadata={"help": "init seed"})

    def __post_init__(self) -> None:
        check_count(self, "num_prefix_tokens")
        check_positive(self, "init_std")


def _prefix_forward(original):
    def forward(self, query, key, value, attention_mask, attn_mask_type=None, **kwargs):  # noqa: ARG001
        b = key.shape[1]
        p = self.prefix_key.shape[0]
        pk = self.prefix_key[:, None].expand(p, b, -1, -1).to(key.dtype)    # [p, b, ng/tp, hn]
        pv = self.prefix_value[:, None].expand(p, b, -1, -1).to(value.dtype)
        key = torch.cat([pk, key], dim=0)      # [p + sk, b, ng/tp, hn]
        value = torch.cat([pv, value], dim=0)
        if attention_mask is not None:         # [b, 1, sq, sk] True = masked -> p open columns
            pad = torch.zeros(*attention_mask.shape[:-1], p, dtype=attention_mask.dtype,
                              device=attention_mask.device)
            attention_mask = torch.cat([pad, attention_mask], dim=-1)
        return original(query, key, value, attention_mask, attn_mask_type=attn_mask_type, **kwargs)
    return forward


def _pattern(t: str) -> str:
    return t if any(c in t for c in "*?[") else f"*{t}"


def apply_prefix(chunks: list, cfg: PrefixConfig, tf_config) -> list:
    from megatron_retro.models.sdpa_attention import SDPAttention

    tp = tf_config.tensor_model_parallel_size
    hn = tf_config.kv_channels
    groups = tf_config.num_query_groups or tf_config.num_attention_heads
    if groups < tp:
        raise UserError(f"prefix: {groups} KV head(s) < parallel.tp={tp} (megatron-core splits them over the "
                        "ranks); use parallel.tp <= model.num_query_groups")
    found = []
    for chunk in chunks:
        for path, module in list(find_modules(chunk, [_pattern(t) for t in cfg.targets])):
            if not isinstance(module, SDPAttention):
                raise UserError(f"{path}: prefix tuning needs the SDPA core attention "
                                f"(model.attention_backend=sdpa), found {type(module).__name__}")
            name = global_path(chunk, path)
            for kind in ("key", "value"):
                full = seeded_full((cfg.num_prefix_tokens, groups, hn), cfg.seed, f"{name}.{kind}",
                                   lambda t, g: t.normal_(0.0, cfg.init_std, generator=g))
                local = tp_slice(full, 1, groups // tp)   # [p, ng/tp, hn]
                register_peft_param(module, f"prefix_{kind}", torch.nn.Parameter(local), axis=1)
            module.prefix_keys = cfg.num_prefix_tokens   # model.smear_keys leaves them alone
            module.forward = types.MethodType(_prefix_forward(type(module).forward.__get__(module)), module)
            found.append(module)
    return found


def prefix_param_count(cfg: PrefixConfig, model_cfg, retro_cfg=None) -> int:
    """2·p·ng·hn per targeted core attention (GPT or RETRO, see peft/model_shapes.py)."""
    from megatron_retro.peft.model_shapes import selected_modules

    groups = model_cfg.num_query_groups or model_cfg.num_attention_heads
    n = len(selected_modules(model_cfg, retro_cfg, [_pattern(t) for t in cfg.targets]))
    return 2 * cfg.num_prefix_tokens * groups * model_cfg.head_dim * n


register_peft_method(PeftMethod(name="prefix", prefix="prefix_", config_cls=PrefixConfig,
                                apply=apply_prefix, count=prefix_param_count))
