"""Gemma 3 layer spec on megatron-core modules (``model.family: gemma3``).

Gemma 3 differs from our GPT layer in five places; each is filled here without forking the layer:
- q/k RMSNorm per head: megatron's ``qk_layernorm`` slots (``q_layernorm`` / ``k_layernorm``).
- RMSNorm weights act as (1 + w): megatron's ``layernorm_zero_centered_gamma`` (models/norm.py).
- post-attention and post-MLP norms (applied to a branch's output before the residual add):
  :class:`Gemma3TransformerLayer` builds two more norms and wraps the two bias-dropout-add
  callables, so any PEFT wrapper of ``linear_proj`` / ``linear_fc2`` stays inside the norm, as
  in HF (LoRA on ``o_proj`` is added before ``post_attention_layernorm``).
- local / global attention: megatron's ``window_size`` + ``window_attn_skip_freq`` pick the
  layers; :class:`~megatron_retro.models.sdpa_attention.SDPAttention` masks the window, and
  :class:`Gemma3SelfAttention` swaps in the local RoPE base on local layers.
- sqrt(d)-scaled embeddings: :func:`scale_embeddings` (a forward hook on the first stage's embedding).
GeGLU with tanh-GELU, GQA and tied embeddings are ordinary config fields.

Notation: s sequence, b micro-batch, d hidden, hn head width.
"""
from __future__ import annotations

import math

import torch
from megatron.core.transformer.attention import SelfAttention
from megatron.core.transformer.transformer_layer import TransformerLayer
from megatron.core.transformer.utils import is_layer_window_attention

from megatron_retro.config import ModelConfig


class Gemma3SelfAttention(SelfAttention):
    """SelfAttention whose local (sliding-window) layers use their own RoPE base."""

    def __init__(self, config, submodules, layer_number: int, local_rotary_base=None, rotary_percent: float = 1.0,
                 **kwargs) -> None:
        super().__init__(config, submodules, layer_number, **kwargs)
        self.local_rope = None
        if local_rotary_base is not None and is_layer_window_attention(
                config.window_size, config.window_attn_skip_freq, layer_number):
            from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

            self.local_rope = RotaryEmbedding(config.kv_channels, rotary_percent, rotary_base=local_rotary_base,
                                              use_cpu_initialization=not torch.cuda.is_available())

    def forward(self, hidden_states, attention_mask, *args, rotary_pos_emb=None, **kwargs):
        if self.local_rope is not None and rotary_pos_emb is not None:
            # Same positions as the global table ([s, 1, 1, hn], s = its length), local base.
            length = (rotary_pos_emb[0] if isinstance(rotary_pos_emb, tuple) else rotary_pos_emb).shape[0]
            rotary_pos_emb = self.local_rope(length).to(hidden_states.device)
        return super().forward(hidden_states, attention_mask, *args, rotary_pos_emb=rotary_pos_emb, **kwargs)


class _NormedBDA:
    """A bias-dropout-add whose branch output goes through ``norm`` first: norm(x) (+ bias) + residual."""

    def __init__(self, bda, norm: torch.nn.Module) -> None:
        self.bda, self.norm = bda, norm

    def __call__(self, training: bool, fused: bool):
        inner = self.bda(training, fused)

        def run(x_with_bias, residual, prob):
            x, bias = x_with_bias  # [s, b, d]
            return inner((self.norm(x), bias), residual, prob)
        return run


class Gemma3TransformerLayer(TransformerLayer):
    """TransformerLayer + Gemma's post-attention and post-MLP norms (``post_self_attn_layernorm``,
    ``post_mlp_layernorm``), applied inside the two bias-dropout-adds."""

    def __init__(self, config, submodules, *args, **kwargs) -> None:
        super().__init__(config, submodules, *args, **kwargs)
        from megatron_retro.models.norm import SequenceParallelNorm

        eps = config.layernorm_epsilon
        self.post_self_attn_layernorm = SequenceParallelNorm(config, config.hidden_size, eps=eps)
        self.post_mlp_layernorm = SequenceParallelNorm(config, config.hidden_size, eps=eps)
        self.self_attn_bda = _NormedBDA(self.self_attn_bda, self.post_self_attn_layernorm)
        self.mlp_bda = _NormedBDA(self.mlp_bda, self.post_mlp_layernorm)


def get_gemma3_layer_local_spec(model: ModelConfig):
    """The local GPT spec with Gemma 3's layer, attention and q/k norms (SDPA core attention)."""
    from megatron.core.transformer.spec_utils import ModuleSpec

    from megatron_retro.models.gpt_local_spec import get_gpt_layer_local_spec
    from megatron_retro.models.norm import SequenceParallelNorm

    spec = get_gpt_layer_local_spec(model, core_attention="sdpa")
    attn = spec.submodules.self_attention
    attn.submodules.q_layernorm = SequenceParallelNorm
    attn.submodules.k_layernorm = SequenceParallelNorm
    params = dict(attn.params, rotary_percent=model.rotary_percent,
                  local_rotary_base=model.rotary_base_local if model.sliding_window else None)
    spec.submodules.self_attention = ModuleSpec(module=Gemma3SelfAttention, params=params,
                                                submodules=attn.submodules)
    spec.module = Gemma3TransformerLayer
    return spec


def scale_embeddings(chunk, model: ModelConfig) -> None:
    """Multiply the first stage's embedding output by sqrt(d) (Gemma), via a forward hook."""
    if getattr(chunk, "embedding", None) is None:
        return
    scale = math.sqrt(model.hidden_size)
    # [s, b, d]: HF multiplies by sqrt(d) rounded to the activation dtype; so does this.
    chunk.embedding.register_forward_hook(
        lambda module, inputs, out: out * torch.tensor(scale, dtype=out.dtype, device=out.device))
