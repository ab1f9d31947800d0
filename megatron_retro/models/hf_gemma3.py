"""HF Gemma 3 (``Gemma3ForCausalLM``, model_type ``gemma3_text``) <-> our ``family: gemma3`` GPT:
config translation and ONE weight-mapping table used both ways (the Llama module's kinds).

Pure tensor / dict code. Layout mapping (our global names <-> HF, inside layer i):
    input_layernorm                  <-> input_layernorm
    self_attention.linear_qkv [ng·(q+2)·hn, d] <-> self_attn.{q,k,v}_proj (per group [q heads | k | v])
    self_attention.{q,k}_layernorm   <-> self_attn.{q,k}_norm          (per-head RMSNorm, hn)
    self_attention.linear_proj       <-> self_attn.o_proj
    post_self_attn_layernorm         <-> post_attention_layernorm
    pre_mlp_layernorm                <-> pre_feedforward_layernorm
    mlp.linear_fc1 [2f, d] = [gate; up] <-> mlp.{gate,up}_proj (GeGLU: gelu_tanh(gate) * up)
    mlp.linear_fc2                   <-> mlp.down_proj
    post_mlp_layernorm               <-> post_feedforward_layernorm
  and embedding [Vp, d] <-> model.embed_tokens [V, d] (tied: no lm_head), final norm <-> model.norm.
All RMSNorm weights are stored as HF stores them (w of (1 + w)); no tensor is transformed.
"""
from __future__ import annotations

from typing import Callable

import torch

from megatron_retro.config import ConfigError, ModelConfig
from megatron_retro.errors import UserError
from megatron_retro.models.hf_llama import (DOWN_PROJ, EMBEDDING, FINAL_NORM, GATE_UP, O_PROJ, QKV, Rule, _groups,
                                             base_to_hf, hf_tensor_for, vocab_divisor)

LAYER_RULES = (
    Rule(("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight"),
         ("input_layernorm.weight",), "same"),
    QKV,
    Rule(("self_attention.q_layernorm.weight",), ("self_attn.q_norm.weight",), "same"),
    Rule(("self_attention.k_layernorm.weight",), ("self_attn.k_norm.weight",), "same"),
    O_PROJ,
    Rule(("post_self_attn_layernorm.weight",), ("post_attention_layernorm.weight",), "same"),
    Rule(("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight"),
         ("pre_feedforward_layernorm.weight",), "same"),
    GATE_UP,
    DOWN_PROJ,
    Rule(("post_mlp_layernorm.weight",), ("post_feedforward_layernorm.weight",), "same"),
)
GLOBAL_RULES = (EMBEDDING, FINAL_NORM)
HF_IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb_local.inv_freq")


def hf_shapes(model_cfg: ModelConfig, vocab: int) -> dict[str, tuple[int, ...]]:
    """Every tensor a Gemma3ForCausalLM of this config holds, with its shape."""
    d, f = model_cfg.hidden_size, model_cfg.ffn_size
    ng, q, hn = _groups(model_cfg)
    layer = {"input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
             "pre_feedforward_layernorm.weight": (d,), "post_feedforward_layernorm.weight": (d,),
             "self_attn.q_proj.weight": (ng * q * hn, d), "self_attn.k_proj.weight": (ng * hn, d),
             "self_attn.v_proj.weight": (ng * hn, d), "self_attn.o_proj.weight": (d, ng * q * hn),
             "self_attn.q_norm.weight": (hn,), "self_attn.k_norm.weight": (hn,),
             "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f)}
    out = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,)}
    for i in range(model_cfg.num_layers):
        out.update({f"model.layers.{i}.{k}": v for k, v in layer.items()})
    return out


def base_to_gemma3(state: dict, model_cfg: ModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    """Our global-name full state -> Gemma3ForCausalLM state dict."""
    return base_to_hf(state, model_cfg, vocab_size, GLOBAL_RULES, LAYER_RULES)


def gemma3_tensor_for(name: str, get: Callable[[str], torch.Tensor], model_cfg: ModelConfig,
                      padded_vocab: int) -> torch.Tensor:
    """The full tensor of our parameter ``name`` (global name) built from HF Gemma 3 tensors ``get(hf_name)``."""
    return hf_tensor_for(name, get, model_cfg, padded_vocab, GLOBAL_RULES, LAYER_RULES, "Gemma 3 counterpart")


def check_gemma3_compatible(model_cfg: ModelConfig) -> None:
    for ok, what in ((model_cfg.arch == "gpt", "model.arch=gpt"), (model_cfg.family == "gemma3", "model.family=gemma3"),
                     (model_cfg.activation == "geglu_tanh", "model.activation=geglu_tanh"),
                     (not model_cfg.untie_embeddings, "model.untie_embeddings=false"),
                     (not model_cfg.add_bias_linear, "model.add_bias_linear=false"),
                     (model_cfg.rotary_percent == 1.0, "model.rotary_percent=1.0"),
                     (model_cfg.final_norm, "model.final_norm=true")):
        if not ok:
            raise UserError(f"hf export: a Gemma 3 checkpoint needs {what}")


def _layer_pattern(hf: dict, layers: int, where: str) -> tuple[int | None, bool]:
    """``layer_types`` -> (global_attn_every, uses a window); only a regular pattern is representable."""
    types = hf.get("layer_types")
    if not types:
        every = int(hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6)))
        types = ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(layers)]
    full = [i + 1 for i, t in enumerate(types) if t == "full_attention"]
    if len(full) == layers:
        return None, False
    every = full[0] if full else None
    want = ["full_attention" if every and (i + 1) % every == 0 else "sliding_attention" for i in range(layers)]
    if list(types) != want:
        raise UserError(f"{where}: layer_types is not 'every Nth layer global' (model.global_attn_every)")
    return every, True


def gemma3_model_config(hf: dict, where: str) -> ModelConfig:
    """A Gemma 3 text ``config.json`` (as a dict) -> our ModelConfig, refusing what we cannot represent."""
    if hf.get("model_type") not in ("gemma3_text",):
        raise UserError(f"{where}: model_type={hf.get('model_type')!r}: expected 'gemma3_text' (Gemma3ForCausalLM)")
    for key, want in (("hidden_activation", "gelu_pytorch_tanh"), ("attention_bias", False),
                      ("attn_logit_softcapping", None), ("final_logit_softcapping", None),
                      ("use_bidirectional_attention", False)):
        if hf.get(key, want) != want:
            raise UserError(f"{where}: {key}={hf.get(key)!r}: only {want!r} is supported")
    try:
        layers, hidden = int(hf["num_hidden_layers"]), int(hf["hidden_size"])
        heads, kv = int(hf["num_attention_heads"]), int(hf.get("num_key_value_heads") or hf["num_attention_heads"])
        head_dim, vocab = int(hf.get("head_dim") or hidden // heads), int(hf["vocab_size"])
        rope = hf.get("rope_parameters") or {}
        for kind in ("full_attention", "sliding_attention"):
            rtype = (rope.get(kind) or {}).get("rope_type", "default")
            if rtype != "default":
                raise UserError(f"{where}: rope_parameters.{kind}.rope_type={rtype!r}: only 'default' is supported")
        theta = float((rope.get("full_attention") or {}).get("rope_theta", hf.get("rope_theta", 1e6)))
        local = float((rope.get("sliding_attention") or {}).get("rope_theta", hf.get("rope_local_base_freq", 1e4)))
        every, windowed = _layer_pattern(hf, layers, where)
        return ModelConfig(
            arch="gpt", family="gemma3", num_layers=layers, hidden_size=hidden, num_attention_heads=heads,
            num_query_groups=kv if kv != heads else None, ffn_hidden_size=int(hf["intermediate_size"]),
            kv_channels=head_dim, vocab_size=vocab, make_vocab_size_divisible_by=vocab_divisor(vocab),
            seq_length=min(int(hf.get("max_position_embeddings", 8192)), 8192), activation="geglu_tanh",
            normalization="RMSNorm", norm_epsilon=float(hf.get("rms_norm_eps", 1e-6)), position_embedding="rope",
            rotary_percent=1.0, rotary_base=int(theta), rotary_base_local=int(local),
            sliding_window=int(hf["sliding_window"]) if windowed else None, global_attn_every=every,
            softmax_scale=float(hf.get("query_pre_attn_scalar", head_dim)) ** -0.5,
            untie_embeddings=not hf.get("tie_word_embeddings", True), add_bias_linear=False,
            attention_dropout=float(hf.get("attention_dropout", 0.0)),
            init_method_std=float(hf.get("initializer_range", 0.02)), attention_backend="sdpa")
    except KeyError as e:
        raise UserError(f"{where}: missing field {e.args[0]!r}") from None
    except (ConfigError, TypeError, ValueError) as e:
        raise UserError(f"{where}: cannot be represented: {e}") from None


def _pre_attn_scalar(model_cfg: ModelConfig) -> int | float:
    """HF's ``query_pre_attn_scalar`` (scale = scalar ** -0.5); an int when it is one (its config type)."""
    value = round((model_cfg.softmax_scale or model_cfg.head_dim ** -0.5) ** -2, 6)
    return int(value) if value == int(value) else value


def gemma3_config(model_cfg: ModelConfig, vocab_size: int, special_ids: dict | None = None):
    """The ``transformers.Gemma3TextConfig`` of our model (needs the `hf` extra)."""
    from transformers import Gemma3TextConfig

    n, every = model_cfg.num_layers, model_cfg.global_attn_every
    types = ["sliding_attention" if model_cfg.sliding_window and not (every and (i + 1) % every == 0)
             else "full_attention" for i in range(n)]
    local = model_cfg.rotary_base_local or model_cfg.rotary_base
    ids = special_ids or {}
    return Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=model_cfg.hidden_size, intermediate_size=model_cfg.ffn_size,
        num_hidden_layers=n, num_attention_heads=model_cfg.num_attention_heads,
        num_key_value_heads=model_cfg.num_query_groups or model_cfg.num_attention_heads,
        head_dim=model_cfg.head_dim, max_position_embeddings=model_cfg.seq_length,
        rms_norm_eps=model_cfg.norm_epsilon, hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=_pre_attn_scalar(model_cfg),
        sliding_window=model_cfg.sliding_window or model_cfg.seq_length, layer_types=types,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": float(model_cfg.rotary_base)},
                         "sliding_attention": {"rope_type": "default", "rope_theta": float(local)}},
        tie_word_embeddings=True, attention_bias=False, attention_dropout=model_cfg.attention_dropout,
        initializer_range=model_cfg.init_method_std, **{f"{k}_token_id": v for k, v in ids.items()})
