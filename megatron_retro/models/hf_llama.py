"""HF Llama <-> our GPT: the config translation and ONE weight-mapping table used both ways.

Pure tensor / dict code (no files, no process groups): ``training/hf_convert.py`` reads and
writes checkpoints, ``peft/hf_export.py`` exports LoRA adapters next to the base.

Notation: d hidden, ng key/value groups, q = heads / ng query heads per group, hn head width,
f ffn width, V vocabulary, Vp the padded vocabulary of our embedding table (megatron pads it
so every TP shard has the same size).

Layout mapping (our global names, i.e. layers numbered, TP shards joined):
    decoder.layers.i.self_attention.linear_qkv.weight [ng·(q+2)·hn, d]: per group [q heads | k | v]
        <-> model.layers.i.self_attn.{q,k,v}_proj.weight (heads in order, groups in order)
    decoder.layers.i.mlp.linear_fc1.weight [2f, d] = [gate; up] <-> mlp.{gate,up}_proj.weight
    linear_proj <-> o_proj, linear_fc2 <-> down_proj, the two layer norms, the final norm,
    embedding [Vp, d] <-> embed_tokens [V, d], output_layer [Vp, d] <-> lm_head [V, d]
    (rows V.. of ours are zero padding; no lm_head when the embeddings are tied).
Rotary: megatron's non-interleaved RoPE rotates the two halves of each head (HF's
``rotate_half``), so q/k rows need no permutation (the logits tests check this).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from megatron_retro.config import ConfigError, ModelConfig
from megatron_retro.errors import UserError


@dataclass(frozen=True)
class Rule:
    ours: tuple[str, ...]  # our name (suffix inside a layer, or global); aliases: local / TE spec
    hf: tuple[str, ...]    # HF name(s), same scope
    kind: str              # "same" | "qkv" (split by group) | "gate_up" (halves) | "vocab" (pad rows)


# The projections every HF decoder layer of this family names alike (Llama, Gemma 3).
QKV = Rule(("self_attention.linear_qkv.weight",),
           ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"), "qkv")
O_PROJ = Rule(("self_attention.linear_proj.weight",), ("self_attn.o_proj.weight",), "same")
GATE_UP = Rule(("mlp.linear_fc1.weight",), ("mlp.gate_proj.weight", "mlp.up_proj.weight"), "gate_up")
DOWN_PROJ = Rule(("mlp.linear_fc2.weight",), ("mlp.down_proj.weight",), "same")
LAYER_RULES = (
    Rule(("self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight"),
         ("input_layernorm.weight",), "same"),
    QKV,
    O_PROJ,
    Rule(("mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight"),
         ("post_attention_layernorm.weight",), "same"),
    GATE_UP,
    DOWN_PROJ,
)
EMBEDDING = Rule(("embedding.word_embeddings.weight",), ("model.embed_tokens.weight",), "vocab")
FINAL_NORM = Rule(("decoder.final_layernorm.weight",), ("model.norm.weight",), "same")
OUTPUT = Rule(("output_layer.weight",), ("lm_head.weight",), "vocab")
# HF buffers some versions save and we recompute.
HF_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def global_rules(model_cfg: ModelConfig) -> tuple[Rule, ...]:
    return (EMBEDDING, FINAL_NORM) + ((OUTPUT,) if model_cfg.untie_embeddings else ())


# ------------------------------------------------------------------------------------------
# The per-kind split (ours -> HF) and join (HF -> ours); one pair per kind.

def _groups(model_cfg: ModelConfig) -> tuple[int, int, int]:
    ng = model_cfg.num_query_groups or model_cfg.num_attention_heads
    return ng, model_cfg.num_attention_heads // ng, model_cfg.head_dim


def split_qkv(t: torch.Tensor, model_cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of a fused [ng·(q+2)·hn, ...] tensor -> (q rows [ng·q·hn], k rows [ng·hn], v rows [ng·hn])."""
    ng, q, hn = _groups(model_cfg)
    g = t.reshape(ng, (q + 2) * hn, *t.shape[1:])  # [ng, (q+2)·hn, ...]
    rest = t.shape[1:]
    return (g[:, : q * hn].reshape(-1, *rest), g[:, q * hn:(q + 1) * hn].reshape(-1, *rest),
            g[:, (q + 1) * hn:].reshape(-1, *rest))


def join_qkv(q_rows: torch.Tensor, k_rows: torch.Tensor, v_rows: torch.Tensor, model_cfg: ModelConfig) -> torch.Tensor:
    """Inverse of :func:`split_qkv`: per group [its q heads | its k head | its v head]."""
    ng, q, hn = _groups(model_cfg)
    rest = q_rows.shape[1:]
    return torch.cat([q_rows.reshape(ng, q * hn, *rest), k_rows.reshape(ng, hn, *rest),
                      v_rows.reshape(ng, hn, *rest)], dim=1).reshape(ng * (q + 2) * hn, *rest)


def to_hf(rule: Rule, t: torch.Tensor, model_cfg: ModelConfig, vocab: int) -> tuple[torch.Tensor, ...]:
    if rule.kind == "qkv":
        return split_qkv(t, model_cfg)
    if rule.kind == "gate_up":
        return tuple(t.chunk(2, dim=0))
    if rule.kind == "vocab":
        return (t[:vocab],)
    return (t,)


def from_hf(rule: Rule, parts: list[torch.Tensor], model_cfg: ModelConfig, padded_vocab: int) -> torch.Tensor:
    if rule.kind == "qkv":
        return join_qkv(*parts, model_cfg)
    if rule.kind == "gate_up":
        return torch.cat(parts, dim=0)
    if rule.kind == "vocab":
        (t,) = parts
        return torch.cat([t, t.new_zeros(padded_vocab - t.shape[0], *t.shape[1:])]) if padded_vocab > t.shape[0] else t
    return parts[0]


def hf_shapes(model_cfg: ModelConfig, vocab: int) -> dict[str, tuple[int, ...]]:
    """Every tensor a LlamaForCausalLM of this config holds, with its shape."""
    d, f = model_cfg.hidden_size, model_cfg.ffn_size
    ng, q, hn = _groups(model_cfg)
    layer = {"input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
             "self_attn.q_proj.weight": (ng * q * hn, d), "self_attn.k_proj.weight": (ng * hn, d),
             "self_attn.v_proj.weight": (ng * hn, d), "self_attn.o_proj.weight": (d, ng * q * hn),
             "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f)}
    out = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,)}
    if model_cfg.untie_embeddings:
        out["lm_head.weight"] = (vocab, d)
    for i in range(model_cfg.num_layers):
        out.update({f"model.layers.{i}.{k}": v for k, v in layer.items()})
    return out


# ------------------------------------------------------------------------------------------
# Whole-model conversion

def _find(state: dict, names: tuple[str, ...], prefix: str = "") -> torch.Tensor:
    for name in names:
        if prefix + name in state:
            return state[prefix + name]
    raise UserError(f"hf export: the base has no {prefix}{names[0]}")


def base_to_hf(state: dict, model_cfg: ModelConfig, vocab_size: int, model_rules: tuple[Rule, ...],
               layer_rules: tuple[Rule, ...]) -> dict[str, torch.Tensor]:
    """Our global-name full state -> an HF decoder's state dict, by the architecture's rule tables."""
    out = {}
    for rule in model_rules:
        out.update(zip(rule.hf, to_hf(rule, _find(state, rule.ours), model_cfg, vocab_size)))
    for i in range(model_cfg.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        for rule in layer_rules:
            parts = to_hf(rule, _find(state, rule.ours, src), model_cfg, vocab_size)
            out.update({dst + name: t for name, t in zip(rule.hf, parts)})
    return {k: v.contiguous() for k, v in out.items()}


def base_to_llama(state: dict, model_cfg: ModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    """Our global-name full state -> LlamaForCausalLM state dict."""
    return base_to_hf(state, model_cfg, vocab_size, global_rules(model_cfg), LAYER_RULES)


_LAYER_PREFIX = "decoder.layers."


def hf_tensor_for(name: str, get: Callable[[str], torch.Tensor], model_cfg: ModelConfig, padded_vocab: int,
                  model_rules: tuple[Rule, ...], layer_rules: tuple[Rule, ...], missing: str) -> torch.Tensor:
    """The full tensor of our parameter ``name`` (global name) built from HF tensors ``get(hf_name)``
    by the architecture's rule tables; ``missing`` ends the error when no rule names it."""
    if name.startswith(_LAYER_PREFIX):
        index, _, suffix = name[len(_LAYER_PREFIX):].partition(".")
        rules, src, dst = layer_rules, suffix, f"model.layers.{index}."
    else:
        rules, src, dst = model_rules, name, ""
    for rule in rules:
        if src in rule.ours:
            return from_hf(rule, [get(dst + h) for h in rule.hf], model_cfg, padded_vocab)
    raise UserError(f"hf import: our parameter {name} has no {missing}")


def llama_tensor_for(name: str, get: Callable[[str], torch.Tensor], model_cfg: ModelConfig,
                     padded_vocab: int) -> torch.Tensor:
    """The full tensor of our parameter ``name`` (global name) built from HF Llama tensors ``get(hf_name)``."""
    return hf_tensor_for(name, get, model_cfg, padded_vocab, global_rules(model_cfg), LAYER_RULES,
                         "Llama counterpart (is the model a plain GPT with the local or TE spec?)")


# ------------------------------------------------------------------------------------------
# Config translation

def check_llama_compatible(model_cfg: ModelConfig) -> None:
    """Refuse what a LlamaForCausalLM cannot represent, naming the field."""
    for ok, what in ((model_cfg.arch == "gpt", "model.arch=gpt (RETRO has no HF Llama equivalent)"),
                     (model_cfg.activation == "swiglu", "model.activation=swiglu"),
                     (model_cfg.normalization == "RMSNorm", "model.normalization=RMSNorm"),
                     (model_cfg.position_embedding == "rope", "model.position_embedding=rope"),
                     (model_cfg.rotary_percent == 1.0, "model.rotary_percent=1.0"),
                     (not model_cfg.add_bias_linear, "model.add_bias_linear=false"),
                     (model_cfg.final_norm, "model.final_norm=true")):
        if not ok:
            raise UserError(f"hf export: a Llama checkpoint needs {what}")


def llama_config(model_cfg: ModelConfig, vocab_size: int):
    """The ``transformers.LlamaConfig`` of our model (needs the `hf` extra)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=model_cfg.hidden_size,
                       intermediate_size=model_cfg.ffn_size, num_hidden_layers=model_cfg.num_layers,
                       num_attention_heads=model_cfg.num_attention_heads,
                       num_key_value_heads=model_cfg.num_query_groups or model_cfg.num_attention_heads,
                       head_dim=model_cfg.head_dim, max_position_embeddings=model_cfg.seq_length,
                       rms_norm_eps=model_cfg.norm_epsilon, rope_theta=float(model_cfg.rotary_base),
                       hidden_act="silu", initializer_range=model_cfg.init_method_std,
                       attention_dropout=model_cfg.attention_dropout,
                       tie_word_embeddings=not model_cfg.untie_embeddings, attention_bias=False, mlp_bias=False)


def vocab_divisor(vocab: int) -> int:
    """``make_vocab_size_divisible_by`` for an imported vocabulary: V / gcd(V, 128) when that
    leaves V unpadded at every TP size up to 8, so the checkpoint reshards across TP (megatron's
    padding would otherwise change the embedding's global shape); else megatron's usual 128."""
    g = math.gcd(vocab, 128)
    return vocab // g if g >= 8 else 128


def _rope_theta(hf: dict, where: str) -> float:
    """rope_theta from a transformers 4.x (rope_theta + rope_scaling) or 5.x (rope_parameters) config."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for block, key in ((params, "rope_parameters"), (scaling, "rope_scaling")):
        kind = block.get("rope_type", block.get("type", "default"))
        if kind != "default":
            raise UserError(f"{where}: {key}.rope_type={kind!r}: only plain RoPE ('default') is supported "
                            f"(model.rotary_base has no scaling)")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def llama_model_config(hf: dict, where: str) -> ModelConfig:
    """A Llama ``config.json`` (as a dict) -> our ModelConfig, refusing what we cannot represent."""
    model_type = hf.get("model_type")
    if model_type != "llama":
        raise UserError(f"{where}: model_type={model_type!r}: only 'llama' checkpoints can be imported")
    for key, want in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if hf.get(key, want) != want:
            raise UserError(f"{where}: {key}={hf.get(key)!r}: only {want!r} is supported "
                            f"(our GPT is SwiGLU without biases)")
    theta = _rope_theta(hf, where)
    if theta != int(theta):
        raise UserError(f"{where}: rope_theta={theta}: model.rotary_base must be an integer")
    try:
        heads, kv = int(hf["num_attention_heads"]), int(hf.get("num_key_value_heads") or hf["num_attention_heads"])
        hidden, vocab = int(hf["hidden_size"]), int(hf["vocab_size"])
        return ModelConfig(
            arch="gpt", num_layers=int(hf["num_hidden_layers"]), hidden_size=hidden, num_attention_heads=heads,
            num_query_groups=kv if kv != heads else None, ffn_hidden_size=int(hf["intermediate_size"]),
            kv_channels=int(hf.get("head_dim") or hidden // heads), vocab_size=vocab,
            make_vocab_size_divisible_by=vocab_divisor(vocab),
            seq_length=int(hf.get("max_position_embeddings", 2048)), activation="swiglu",
            normalization="RMSNorm", norm_epsilon=float(hf.get("rms_norm_eps", 1e-6)), position_embedding="rope",
            rotary_percent=1.0, rotary_base=int(theta),
            untie_embeddings=not hf.get("tie_word_embeddings", False), add_bias_linear=False,
            attention_dropout=float(hf.get("attention_dropout", 0.0)),
            init_method_std=float(hf.get("initializer_range", 0.02)))
    except KeyError as e:
        raise UserError(f"{where}: missing field {e.args[0]!r}") from None
    except (ConfigError, TypeError, ValueError) as e:
        raise UserError(f"{where}: cannot be represented: {e}") from None
