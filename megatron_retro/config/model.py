"""``model:``: the decoder architecture (GPT or RETRO, Gemma 3 layout), validated once."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from megatron_retro.config.base import cfg, require


@dataclass
class ModelConfig:
    """Architecture of a GPT (or RETRO) decoder built from megatron-core layer specs."""

    arch: Literal["gpt", "retro"] = cfg("gpt", "model family: 'gpt' or 'retro'")
    num_layers: int = cfg(2, "number of decoder transformer layers")
    hidden_size: int = cfg(128, "model width d")
    num_attention_heads: int = cfg(4, "attention heads; must divide hidden_size")
    num_query_groups: Optional[int] = cfg(None, "key/value head groups for GQA (None = MHA)")
    ffn_hidden_size: Optional[int] = cfg(None, "MLP inner width (None = 4*d, or 8/3*d rounded for SwiGLU)")
    kv_channels: Optional[int] = cfg(None, "per-head width (None = hidden_size / heads)")
    vocab_size: Optional[int] = cfg(None, "vocabulary size (None = taken from the tokenizer)")
    make_vocab_size_divisible_by: int = cfg(128, "pad the embedding table to a multiple of this times TP")
    seq_length: int = cfg(256, "training sequence length ns")
    activation: Literal["swiglu", "gelu", "squared_relu", "geglu_tanh"] = cfg(
        "swiglu", "MLP activation ('geglu_tanh' = gated tanh-GELU, Gemma's)")
    normalization: Literal["RMSNorm", "LayerNorm"] = cfg("RMSNorm", "normalisation layer type")
    norm_epsilon: float = cfg(1e-5, "epsilon of the normalisation layers")
    position_embedding: Literal["rope", "learned_absolute", "none"] = cfg("rope", "position encoding")
    rotary_percent: float = cfg(1.0, "fraction of each head's channels that get rotary embeddings")
    rotary_base: int = cfg(10000, "rotary embedding base")
    untie_embeddings: bool = cfg(True, "separate input embedding and output projection weights")
    add_bias_linear: bool = cfg(False, "biases in the linear layers")
    hidden_dropout: float = cfg(0.0, "dropout on residual branches")
    attention_dropout: float = cfg(0.0, "dropout on attention probabilities")
    init_method_std: float = cfg(0.02, "std of the normal weight initialisation")
    final_norm: bool = cfg(
        True, "normalise the last layer's output before the output layer; false = no final norm (on the "
              "synthetic copy task the tiny GPT leaves the copy plateau without it: BENCHMARKS 'Study')")
    smear_keys: bool = cfg(
        False, "smeared keys (Olsson et al. 2022): each decoder self-attention key is a learned per-head mix of "
               "its own and the previous position's key, so one layer can do induction (content-based "
               "copying); needs the SDPA core attention (models/key_smear.py, BENCHMARKS 'Study')")
    attention_backend: Literal["auto", "sdpa", "unfused", "te"] = cfg(
        "auto", "core attention: 'auto' = Transformer Engine if importable else torch SDPA")
    family: Literal["gpt", "gemma3"] = cfg(
        "gpt", "layer layout: 'gemma3' adds q/k RMSNorm, post-attention/post-MLP norms, (1+w) RMSNorm "
               "weights and sqrt(d)-scaled embeddings (models/gemma3_spec.py)")
    sliding_window: Optional[int] = cfg(None, "local attention: tokens a query sees, itself included (None = off)")
    global_attn_every: Optional[int] = cfg(
        None, "with sliding_window: every Nth layer (N, 2N, ...) attends globally, the others locally")
    rotary_base_local: Optional[int] = cfg(None, "RoPE base of the local (sliding-window) layers (None = rotary_base)")
    softmax_scale: Optional[float] = cfg(None, "attention score scale (None = 1/sqrt(head width))")

    recompute_modules: list[str] = cfg(
        [], "selective recompute: parts of every layer whose activations are recomputed in backward "
            "instead of kept, any of 'mlp', 'core_attn' (empty = none; train.recompute=true recomputes "
            "whole layers instead; megatron's 'layernorm' needs Transformer Engine)")
    fused_output_loss: bool = cfg(
        True, "training loss through the chunked output-layer + cross-entropy op (no full logits; logits "
              "only where the loss mask is set); false = megatron's output layer + vocab-parallel CE")

    def __post_init__(self) -> None:
        require(self.sliding_window is None or self.sliding_window >= 1,
                 f"model.sliding_window={self.sliding_window}: must be >= 1")
        require(self.global_attn_every is None or (self.global_attn_every >= 1 and self.sliding_window),
                 f"model.global_attn_every={self.global_attn_every}: must be >= 1 and needs model.sliding_window")
        require(self.family != "gemma3" or self.normalization == "RMSNorm",
                 f"model.family=gemma3: needs model.normalization=RMSNorm (got {self.normalization})")
        require(self.num_layers >= 1, f"model.num_layers={self.num_layers}: must be >= 1")
        require(self.hidden_size >= 1, f"model.hidden_size={self.hidden_size}: must be >= 1")
        require(self.num_attention_heads >= 1,
                 f"model.num_attention_heads={self.num_attention_heads}: must be >= 1")
        require(self.hidden_size % self.num_attention_heads == 0 or self.kv_channels is not None,
                 f"model.hidden_size={self.hidden_size}: must be divisible by "
                 f"model.num_attention_heads={self.num_attention_heads} (or set model.kv_channels)")
        if self.num_query_groups is not None:
            require(self.num_query_groups >= 1
                     and self.num_attention_heads % self.num_query_groups == 0,
                     f"model.num_query_groups={self.num_query_groups}: must divide "
                     f"model.num_attention_heads={self.num_attention_heads}")
        require(self.seq_length >= 1, f"model.seq_length={self.seq_length}: must be >= 1")
        require(0.0 < self.rotary_percent <= 1.0,
                 f"model.rotary_percent={self.rotary_percent}: must be in (0, 1]")
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"model.{name}={value}: must be in [0, 1)")
        require(self.vocab_size is None or self.vocab_size >= 2,
                 f"model.vocab_size={self.vocab_size}: must be >= 2")
        require(self.init_method_std > 0, f"model.init_method_std={self.init_method_std}: must be > 0")
        bad = [m for m in self.recompute_modules if m not in ("mlp", "core_attn")]
        require(not bad, f"model.recompute_modules={self.recompute_modules}: {bad} not in 'mlp', 'core_attn'")

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    @property
    def gated_mlp(self) -> bool:
        """fc1 holds two ffn_size halves (gate and up): SwiGLU and Gemma's tanh-GeGLU."""
        return self.activation in ("swiglu", "geglu_tanh")

    @property
    def ffn_size(self) -> int:
        """MLP inner width; NVIDIA's SwiGLU GPTs use 8/3*d rounded up to a multiple of 64."""
        if self.ffn_hidden_size is not None:
            return self.ffn_hidden_size
        if self.activation == "swiglu":
            return int(math.ceil(8 * self.hidden_size / 3 / 64) * 64)
        return 4 * self.hidden_size
