"""Core attention through torch's fused ``scaled_dot_product_attention`` for the local spec.

megatron-core's ``DotProductAttention`` materialises the [b, np, sq, sk] score and probability
matrices and copies them for an in-place mask: on CPU that costs ~0.3 s a step at seq 512.  This
module keeps megatron's interface (same constructor, same forward arguments, same output layout)
and lets torch pick its fused kernel (flash / memory-efficient on GPU, the fused CPU kernel here).
On CPU, causal self-attention with no explicit mask or dropout takes
:func:`~megatron_retro.models.block_attention.block_causal_attention` instead: with grouped queries
(several query heads per key head, e.g. Gemma 3) recomputing the probabilities in backward (one
GEMM per block of positions for all heads of a group; 1.4x faster fwd+bwd than the fused kernel at
Gemma 3 270M's shape, 4 query heads / 1 key head of 256, seq 384); with one query head per key
head keeping them from forward (72.8 vs 87.0 ms fwd+bwd per layer against the fused kernel at
bench_peft's shape, 8 heads of 64, seq 512, b 4, one core; recomputing: 87.4 ms, no gain), which
holds ~s²/2 floats per head until the layer's backward (18.9 MB a layer there; above
``KEEP_PROBS_MAX_BYTES`` a layer, e.g. long sequences, the fused kernel again).

With ``smear_keys`` (``model.smear_keys``, self-attention only) each key is first mixed with the
one before it through a learned per-group weight (:mod:`~megatron_retro.models.key_smear`); the
weights shard with the key/value groups under tensor parallelism.

Notation: sq query length, sk key length, b micro-batch, np heads on this TP rank, ng key/value
groups on this rank, hn head width.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.utils import is_layer_window_attention
from megatron.core.utils import divide

from megatron_retro.models.block_attention import BLOCK, block_causal_attention
from megatron_retro.models.key_smear import smear_keys

# one query head per key head: the blocked path keeps b·np·sq²/2 fp32 probabilities per layer until its
# backward; above this many bytes per layer (long sequences, many heads) torch's fused kernel, O(sq), is used
KEEP_PROBS_MAX_BYTES = 64 * 2 ** 20


class SDPAttention(MegatronModule):
    """Drop-in for DotProductAttention: [sq, b, np, hn] q, [sk, b, ng, hn] k/v -> [sq, b, np*hn]."""

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: Optional[float] = None,
                 softmax_scale: Optional[float] = None, cp_comm_type: Optional[str] = None,
                 pg_collection=None, smear_keys: bool = False) -> None:
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPAttention: context parallelism needs Transformer Engine attention")
        tp_size = pg_collection.tp.size() if pg_collection is not None else \
            tensor_parallel.get_tensor_model_parallel_world_size()
        self.attn_mask_type = attn_mask_type
        self.num_heads = divide(config.num_attention_heads, tp_size)
        self.num_groups = divide(config.num_query_groups, tp_size)
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(config.kv_channels)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        # Sliding-window (local) layer: a query sees itself and the `window` tokens before it.
        self.window = config.window_size[0] if is_layer_window_attention(
            config.window_size, config.window_attn_skip_freq, layer_number) else None
        self.key_smear = None
        self.prefix_keys = 0   # prefix tuning prepends this many position-less keys: never smeared
        if smear_keys:   # one logit per key/value group on this rank (sigmoid(0) = half k_t, half k_{t-1})
            self.key_smear = torch.nn.Parameter(torch.zeros(self.num_groups, dtype=config.params_dtype))
            tensor_parallel.set_tensor_model_parallel_attributes(self.key_smear, True, 0, 1)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: Optional[torch.Tensor], attn_mask_type: Optional[AttnMaskType] = None,
                attention_bias: Optional[torch.Tensor] = None, packed_seq_params=None) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention: packed sequences / attention bias need TE attention")
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        sq, b, np_, hn = query.shape
        sk = key.shape[0]
        if self.key_smear is not None:
            p = self.prefix_keys   # [sk, b, ng, hn]; prefix-tuning keys (the first p) are not smeared
            key = torch.cat([key[:p], smear_keys(key[p:], self.key_smear)]) if p else smear_keys(key, self.key_smear)
        dropout_p = self.dropout_p if self.training else 0.0
        keep_probs = np_ == key.shape[2] and torch.is_grad_enabled()   # one query head per key head, training
        if self._block_path(query, key, attention_mask, mask_type, dropout_p, keep_probs):   # [sq, b, np*hn]
            return block_causal_attention(query, key, value, self.softmax_scale, self.window, keep_probs=keep_probs)
        # Contiguous [b, heads, s, hn]: torch's CPU flash kernel runs ~1.3x faster on it than on
        # the strided view of megatron's [s, b, ...] layout, copy included.
        q = query.permute(1, 2, 0, 3).contiguous()  # [b, np, sq, hn]
        k = key.permute(1, 2, 0, 3).contiguous()    # [b, ng, sk, hn]
        v = value.permute(1, 2, 0, 3).contiguous()  # [b, ng, sk, hn]
        attn_mask, is_causal = self._sdpa_mask(attention_mask, mask_type, sq, sk, query.device, self.window)
        if dropout_p > 0.0 and not self.config.sequence_parallel:
            with tensor_parallel.get_cuda_rng_tracker().fork():
                out = self._sdpa(q, k, v, attn_mask, is_causal, dropout_p)
        else:
            out = self._sdpa(q, k, v, attn_mask, is_causal, dropout_p)
        # [b, np, sq, hn] -> [sq, b, np*hn]
        return out.permute(2, 0, 1, 3).reshape(sq, b, np_ * hn)

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: Optional[dict] = None):
        """The key-smear logits are split over TP ranks along their only axis (one per group)."""
        if self.key_smear is None:
            return super().sharded_state_dict(prefix, sharded_offsets, metadata)
        from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

        return make_sharded_tensors_for_checkpoint({"key_smear": self.key_smear}, prefix, {"key_smear": 0},
                                                   sharded_offsets)

    def _block_path(self, query, key, attention_mask, mask_type, dropout_p, keep_probs: bool) -> bool:
        """CPU, causal self-attention over a whole sequence longer than a block, no explicit mask,
        no dropout: the case where the blocked GEMM path was measured faster (module docstring)."""
        sq, b, np_, _ = query.shape
        kept_bytes = 4 * b * np_ * sq * sq // 2 if keep_probs else 0
        return (query.device.type == "cpu" and mask_type == AttnMaskType.causal and attention_mask is None
                and dropout_p == 0.0 and sq == key.shape[0] and sq > BLOCK and kept_bytes <= KEEP_PROBS_MAX_BYTES)

    def _sdpa(self, q, k, v, attn_mask, is_causal, dropout_p):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
            scale=self.softmax_scale, enable_gqa=self.num_heads != self.num_groups)

    @staticmethod
    def _sdpa_mask(attention_mask: Optional[torch.Tensor], mask_type: AttnMaskType, sq: int, sk: int,
                   device: torch.device, window: Optional[int] = None) -> tuple[Optional[torch.Tensor], bool]:
        """megatron masks are True where attention is *forbidden*; SDPA's bool masks the opposite.

        The sq queries are the last sq of the sk positions (KV cache); ``window`` (local layers)
        also forbids keys more than ``window`` positions before the query."""
        causal = mask_type == AttnMaskType.causal
        if window is not None and window + 1 < sk:
            q_pos = torch.arange(sk - sq, sk, device=device)[:, None]  # [sq, 1]
            k_pos = torch.arange(sk, device=device)[None, :]           # [1, sk]
            allowed = (k_pos <= q_pos) & (q_pos - k_pos <= window) if causal else (q_pos - k_pos).abs() <= window
            if attention_mask is not None:
                allowed = allowed & ~attention_mask.to(torch.bool)
            return allowed, False
        if attention_mask is None:
            if causal and sq != sk:
                # Decoding with a KV cache: the sq new queries are the last sq positions.
                allowed = torch.ones(sq, sk, dtype=torch.bool, device=device).tril(diagonal=sk - sq)
                return allowed, False
            return None, causal
        allowed = ~attention_mask.to(torch.bool)
        if causal:
            allowed = allowed & torch.ones(sq, sk, dtype=torch.bool, device=device).tril(diagonal=sk - sq)
        return allowed, False
