"""Export to Hugging Face: our GPT base -> ``LlamaForCausalLM`` (or, for ``model.family: gemma3``,
``Gemma3ForCausalLM``) weights, LoRA -> HF peft adapter (both families name their projections
``self_attn.{q,k,v,o}_proj`` / ``mlp.{gate,up,down}_proj``, so one LoRA table serves both).

Works from the layout-independent full tensors (global names), so the source may be at any
TP/PP: base weights from :func:`full_model_state` (collective), LoRA from ``peft_state_dict``.
Requires a Llama-architecture base: SwiGLU, RMSNorm, RoPE on the whole head (rotary_percent 1),
no biases.  The base mapping table is :mod:`megatron_retro.models.hf_llama` (shared with
`megatron-retro hf import/export`).
LoRA on a fused linear exports exactly: q/k/v (gate/up) share A and take their rows of B,
since (B·A)[rows] = B[rows]·A.  The adapter is written by peft itself (``save_pretrained``).
"""
from __future__ import annotations

import json
import os

import torch

from megatron_retro.errors import UserError
from megatron_retro.models.hf_llama import base_to_llama, check_llama_compatible, llama_config, split_qkv

__all__ = ["base_to_llama", "check_llama_compatible", "export_hf", "full_model_state", "llama_config", "lora_to_peft"]


def full_model_state(chunks: list) -> dict[str, torch.Tensor]:
    """Collective: {global name: full tensor} of every base parameter (any TP/PP layout)."""
    from megatron_retro.models.global_params import global_shards
    from megatron_retro.peft.api import all_gather_objects, global_name, unwrap
    from megatron_retro.peft.registry import is_peft_param_name

    pieces = [(global_name(s), s.full_shape, s.offset, s.data.detach().float().cpu().clone())
              for s in global_shards([unwrap(c) for c in chunks]) if not is_peft_param_name(s.key)]
    full: dict[str, torch.Tensor] = {}
    for rank_pieces in all_gather_objects(pieces):
        for name, shape, offset, data in rank_pieces:
            t = full.setdefault(name, torch.zeros(shape, dtype=torch.float32))
            t[tuple(slice(o, o + n) for o, n in zip(offset, data.shape))] = data
    return full


_LORA_TARGETS = {"linear_qkv": ("self_attn", ["q_proj", "k_proj", "v_proj"]),
                 "linear_proj": ("self_attn", ["o_proj"]),
                 "linear_fc1": ("mlp", ["gate_proj", "up_proj"]), "linear_fc2": ("mlp", ["down_proj"])}


def lora_to_peft(adapter: dict, model_cfg) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our LoRA tensors -> (HF module path -> {A, B}) keyed as peft's ``lora_A/lora_B`` weights."""
    out, modules = {}, set()
    f = model_cfg.ffn_size
    for i in range(model_cfg.num_layers):
        for ours, (block, hf_names) in _LORA_TARGETS.items():
            part = "self_attention" if block == "self_attn" else "mlp"
            key = f"decoder.layers.{i}.{part}.{ours}."
            if key + "lora_a" not in adapter:
                continue
            a, b = adapter[key + "lora_a"], adapter[key + "lora_b"]
            if ours == "linear_qkv":
                bs = split_qkv(b, model_cfg)
            elif ours == "linear_fc1":
                bs = (b[:f], b[f:])
            else:
                bs = (b,)
            for name, b_part in zip(hf_names, bs):
                path = f"base_model.model.model.layers.{i}.{block}.{name}"
                out[f"{path}.lora_A.weight"] = a.contiguous()
                out[f"{path}.lora_B.weight"] = b_part.contiguous()
                modules.add(name)
    if not out:
        raise UserError("export-hf: the adapter holds no LoRA tensors on linear_qkv/proj/fc1/fc2")
    return out, sorted(modules)


def export_hf(directory: str, model_cfg, vocab_size: int, base_state: dict, adapter_state: dict, lora_cfg) -> dict:
    """Write ``<dir>/base`` (Llama/Gemma3ForCausalLM save_pretrained) and ``<dir>/adapter`` (peft)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    if getattr(model_cfg, "family", "gpt") == "gemma3":
        from transformers import Gemma3ForCausalLM as model_cls

        from megatron_retro.models.hf_gemma3 import base_to_gemma3 as to_hf
        from megatron_retro.models.hf_gemma3 import check_gemma3_compatible as check
        from megatron_retro.models.hf_gemma3 import gemma3_config as make_config
    else:
        from transformers import LlamaForCausalLM as model_cls

        to_hf, check, make_config = base_to_llama, check_llama_compatible, llama_config
    check(model_cfg)
    model = model_cls(make_config(model_cfg, vocab_size)).float()
    missing, unexpected = model.load_state_dict(to_hf(base_state, model_cfg, vocab_size), strict=False)
    tied = not model_cfg.untie_embeddings
    missing = [m for m in missing if "rotary" not in m and not (tied and m == "lm_head.weight")]
    if missing or unexpected:
        raise UserError(f"export-hf: base conversion mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.save_pretrained(os.path.join(directory, "base"))
    tensors, modules = lora_to_peft(adapter_state, model_cfg)
    peft_model = get_peft_model(model, LoraConfig(r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                                                  use_rslora=lora_cfg.rslora, target_modules=modules))
    result = set_peft_model_state_dict(peft_model, tensors)
    if getattr(result, "unexpected_keys", None):
        raise UserError(f"export-hf: peft rejected {result.unexpected_keys[:3]}")
    peft_model.save_pretrained(os.path.join(directory, "adapter"))
    summary = {"base": os.path.join(directory, "base"), "adapter": os.path.join(directory, "adapter"),
               "lora_modules": modules, "tensors": len(tensors)}
    with open(os.path.join(directory, "export.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    return summary
