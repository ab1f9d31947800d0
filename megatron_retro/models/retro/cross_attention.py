"""RETRO's two cross-attentions, as modules for the ``cross_attention`` slot of a TransformerLayer.

Notation: ns sequence, bs micro-batch, d hidden, m chunk length, l = ceil(ns / m) chunks,
k neighbours per chunk, r neighbour length, h heads (hl = h / tp on this rank), hd head width,
tp tensor-parallel size; "(/tp)" marks an axis split over TP by sequence parallelism.

Layouts:
    decoder hidden      [ns(/tp), bs, d]
    chunk states        [m(/tp), l·bs, d]       decoder states of chunk c of sample b at column c·bs + b
    neighbour context   [r(/tp), k·l·bs, d]     neighbour j of chunk c of sample b at column (j·l + c)·bs + b

``RetroChunkedCrossAttention`` (decoder, retrieval layers): on the first retrieval layer it runs
the encoder over the embedded neighbours (its first layer cross-attends to the chunk states) and
replaces the context by the encoder output; then every retrieval layer attends from the decoder
to its chunk's k·r encoded neighbour tokens with RETRO's causal shift, through
``megatron_retro.kernels.chunked_cross_attention`` (Triton on CUDA, torch reference on CPU; the
shift is done by indexing, no pad/permute copies of the queries or the output).  Generation
with a KV cache uses the same function on a window of whole chunks (``_attend_positions``).

``RetroEncoderCrossAttention`` (encoder layers): every neighbour token attends to the m decoder
states of the chunk the neighbour was retrieved for (bidirectional; one SDPA call for all k).

Tensor parallelism: q/kv projections are column-parallel (heads split), the output projection
row-parallel; sequence parallelism gathers inside the column-parallel linears and scatters in
the row-parallel one, as in the GPT layers.  Parameters that exist only on retrieval layers
live in these modules (the pre-norm included) and are checkpointed under per-layer keys.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import parallel_state, tensor_parallel
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import build_module

from megatron_retro.kernels import chunked_cross_attention


@dataclass
class RetroCrossAttentionSubmodules:
    linear_q: object = None
    linear_kv: object = None
    linear_proj: object = None
    pre_norm: object = None


def _tp_group(pg_collection):
    return pg_collection.tp if pg_collection is not None else parallel_state.get_tensor_model_parallel_group()


def _attention_rng(config, dropout_p: float):
    """Dropout on TP-split heads draws from the model-parallel RNG stream."""
    if dropout_p > 0.0:
        return tensor_parallel.get_cuda_rng_tracker().fork()
    return contextlib.nullcontext()


class _Projections(MegatronModule):
    """q / fused kv (per head: [k | v]) column-parallel projections and a row-parallel output."""

    def __init__(self, config, submodules: RetroCrossAttentionSubmodules, pg_collection=None):
        super().__init__(config=config)
        tp_group = _tp_group(pg_collection)
        tp = tp_group.size()
        self.head_dim = config.kv_channels
        self.heads = config.num_attention_heads // tp  # hl
        inner = config.num_attention_heads * config.kv_channels
        common = dict(config=config, init_method=config.init_method, bias=config.add_bias_linear,
                      skip_bias_add=False, gather_output=False, is_expert=False, tp_group=tp_group)
        self.linear_q = build_module(submodules.linear_q, config.hidden_size, inner, **common)
        self.linear_kv = build_module(submodules.linear_kv, config.hidden_size, 2 * inner, **common)
        self.linear_proj = build_module(
            submodules.linear_proj, inner, config.hidden_size, config=config,
            init_method=config.output_layer_init_method, bias=config.add_bias_linear,
            input_is_parallel=True, skip_bias_add=True, is_expert=False, tp_group=tp_group)


class RetroEncoderCrossAttention(_Projections):
    """Neighbour tokens [r(/tp), k·l·bs, d] attend to chunk states [m(/tp), l·bs, d] (encoder layers)."""

    def __init__(self, config, submodules: RetroCrossAttentionSubmodules, layer_number: int = 1,
                 attn_mask_type=None, pg_collection=None, cp_comm_type=None):
        super().__init__(config, submodules, pg_collection)
        self.dropout_p = config.attention_dropout

    def forward(self, hidden_states, attention_mask=None, key_value_states=None, inference_context=None,
                **unused):
        hl, hd = self.heads, self.head_dim
        q, _ = self.linear_q(hidden_states)                 # [r, k·l·bs, hl·hd]
        kv, _ = self.linear_kv(key_value_states)            # [m, l·bs, hl·2·hd]
        r, klb = q.shape[:2]
        m, lb = kv.shape[:2]
        kk = klb // lb
        q = q.view(r, kk, lb, hl, hd).permute(2, 3, 0, 1, 4).reshape(lb, hl, r * kk, hd)
        kv = kv.view(m, lb, hl, 2, hd)
        k = kv[:, :, :, 0].permute(1, 2, 0, 3)              # [l·bs, hl, m, hd]
        v = kv[:, :, :, 1].permute(1, 2, 0, 3)
        p = self.dropout_p if self.training else 0.0
        with _attention_rng(self.config, p):
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # [l·bs, hl, r·k, hd]
        out = out.view(lb, hl, r, kk, hd).permute(2, 3, 0, 1, 4).reshape(r, klb, hl * hd)
        return self.linear_proj(out)                        # ([r(/tp), k·l·bs, d], bias)


class RetroChunkedCrossAttention(_Projections):
    """Decoder chunked cross-attention of one retrieval layer (+ the encoder on the first one).

    forward(hidden [ns(/tp), bs, d], key_value_states=context [r(/tp), k·l·bs, d]) returns
    {"output": (out [ns(/tp), bs, d], None), "context": encoder output (or the context as given)}.
    """

    def __init__(self, config, submodules: RetroCrossAttentionSubmodules, layer_number: int = 1,
                 attn_mask_type=None, pg_collection=None, cp_comm_type=None, *, chunk_length: int,
                 attention_gate: bool = False, encoder=None,
                 encoder_config=None, rotary: Optional[dict] = None):
        super().__init__(config, submodules, pg_collection)
        self.layer_number = layer_number
        self.chunk_length = chunk_length
        self.dropout_p = config.attention_dropout
        self.tp_group = _tp_group(pg_collection)
        self.pre_norm = build_module(submodules.pre_norm, config=config, hidden_size=config.hidden_size,
                                     eps=config.layernorm_epsilon)
        self.gate = None
        if attention_gate:
            self.gate = torch.nn.Parameter(torch.zeros(1, dtype=config.params_dtype))
            # Under SP each rank holds part of the sequence: the gate's gradient is a partial sum.
            self.gate.sequence_parallel = config.sequence_parallel
        self.encoder = None
        self.encoder_rotary = None
        if encoder is not None:
            from megatron.core.transformer.transformer_block import TransformerBlock

            # a final norm on the encoder output: the decoder's kv projection reads it directly
            self.encoder = TransformerBlock(config=encoder_config, spec=encoder, pre_process=True,
                                            post_process=True, pg_collection=pg_collection)
            if rotary is not None:
                from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

                self.encoder_rotary = RotaryEmbedding(kv_channels=config.kv_channels, **rotary)

    # ---------------------------------------------------------------------------------------
    def _chunk_states(self, x: torch.Tensor) -> torch.Tensor:
        """Normed decoder states [ns(/tp), bs, d] -> [m(/tp), l·bs, d] (last chunk zero-padded)."""
        sp = self.config.sequence_parallel
        if sp:  # the consumer re-splits, so backward only takes this rank's slice
            x = tensor_parallel.gather_from_sequence_parallel_region(
                x, tensor_parallel_output_grad=False, group=self.tp_group)
        ns, bs, d = x.shape
        m = self.chunk_length
        l = -(-ns // m)
        if l * m != ns:
            x = F.pad(x, (0, 0, 0, 0, 0, l * m - ns))
        chunks = x.view(l, m, bs, d).transpose(0, 1).reshape(m, l * bs, d)
        if sp:
            chunks = tensor_parallel.scatter_to_sequence_parallel_region(chunks, group=self.tp_group)
        return chunks

    def run_encoder(self, normed: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """Embedded neighbours [r(/tp), k·l·bs, d] -> encoded neighbours, same shape."""
        rotary = None
        if self.encoder_rotary is not None:
            r = neighbours.shape[0] * (self.tp_group.size() if self.config.sequence_parallel else 1)
            rotary = self.encoder_rotary(r)
        return self.encoder(hidden_states=neighbours, attention_mask=None, context=self._chunk_states(normed),
                            context_mask=None, rotary_pos_emb=rotary)

    def forward(self, hidden_states, attention_mask=None, key_value_states=None, inference_context=None,
                **unused):
        normed = self.pre_norm(hidden_states)
        if inference_context is not None:
            return self._forward_inference(normed, key_value_states, inference_context)
        if key_value_states is None:
            raise ValueError(f"RETRO layer {self.layer_number}: no neighbour context reached this layer")
        context = key_value_states
        if self.encoder is not None:
            context = self.run_encoder(normed, context)
        out = self.attend(normed, context)
        return {"output": (out, None), "context": context}

    def attend(self, normed: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Chunked cross-attention of decoder states to encoded neighbours -> [ns(/tp), bs, d]."""
        hl, hd, m = self.heads, self.head_dim, self.chunk_length
        q, _ = self.linear_q(normed)                        # [ns, bs, hl·hd]
        ns, bs = q.shape[:2]
        l = -(-ns // m)
        q = q.view(ns, bs, hl, hd)
        if l * m != ns:  # generation / ragged prompts: the kernel's shift assumes whole chunks
            q = F.pad(q, (0, 0, 0, 0, 0, 0, 0, l * m - ns))
        kv, _ = self.linear_kv(context)                     # [r, k·l·bs, hl·2·hd]
        r = kv.shape[0]
        kk = kv.shape[1] // (l * bs)
        # [r, k, l, bs, hl, 2, hd] -> [bs, l, r·k, hl, 2, hd]: a view (r and k merge)
        kv = kv.view(r, kk, l, bs, hl, 2, hd).permute(3, 2, 0, 1, 4, 5, 6).reshape(bs, l, r * kk, hl, 2, hd)
        p = self.dropout_p if self.training else 0.0
        with _attention_rng(self.config, p):
            out = chunked_cross_attention(q, kv[..., 0, :], kv[..., 1, :], chunk_length=m,
                                          softmax_scale=1.0 / math.sqrt(hd), dropout_p=p)  # [l·m, bs, hl, hd]
        out = out[:ns].reshape(ns, bs, hl * hd)
        out, bias = self.linear_proj(out)                   # [ns(/tp), bs, d]
        if bias is not None:  # rows before the first complete chunk get no attention, not even a bias
            out = out + bias * self._attending_rows(out.shape[0], out.device, out.dtype)
        if self.gate is not None:
            out = out * torch.tanh(self.gate)
        return out

    def _attending_rows(self, local_len: int, device, dtype, start: int = 0) -> torch.Tensor:
        if self.config.sequence_parallel:
            start = self.tp_group.rank() * local_len
        t = torch.arange(start, start + local_len, device=device)
        return (t >= self.chunk_length - 1).to(dtype).view(-1, 1, 1)

    # ---------------------------------------------------------------------------------------
    # Incremental decoding (KV cache): new tokens at positions [offset, offset + s).
    def _forward_inference(self, normed: torch.Tensor, context: Optional[torch.Tensor], ictx) -> dict:
        """Encode each chunk once, when it completes; attend the new tokens to their chunks.

        The first retrieval layer caches its normed decoder states (the encoder's chunk states)
        and the encoder output of every complete chunk in ``ictx.retro_cache``; ``context`` is the
        embedded neighbours of the complete chunks so far, [r, k·n·bs, d] in (k, n, bs) order.
        """
        if self.config.sequence_parallel:
            raise ValueError("RETRO generation: sequence parallelism is a training layout; turn it off")
        cache = ictx.__dict__.setdefault("retro_cache", {})
        offset = ictx.sequence_len_offset
        s, bs, d = normed.shape
        m = self.chunk_length
        n_complete = (offset + s) // m
        if self.encoder is not None:
            states = cache.get("states")
            if states is None:
                states = cache["states"] = normed.new_zeros(ictx.max_sequence_length, bs, d)
            states[offset:offset + s] = normed
            encoded = cache.get("encoded")                  # [r, k, n_done, bs, d]
            n_done = 0 if encoded is None else encoded.shape[2]
            if n_complete > n_done:
                if context is None or context.shape[1] % (n_complete * bs):
                    raise ValueError(f"RETRO generation: need the neighbours of all {n_complete} complete "
                                     f"chunks, got a context of shape {None if context is None else tuple(context.shape)}")
                r = context.shape[0]
                kk = context.shape[1] // (n_complete * bs)
                new = n_complete - n_done
                neighbours = context.view(r, kk, n_complete, bs, d)[:, :, n_done:n_complete].reshape(r, kk * new * bs, d)
                chunk_states = states[n_done * m:n_complete * m].view(new, m, bs, d).transpose(0, 1)
                rotary = self.encoder_rotary(r) if self.encoder_rotary is not None else None
                out = self.encoder(hidden_states=neighbours, attention_mask=None,
                                   context=chunk_states.reshape(m, new * bs, d), context_mask=None,
                                   rotary_pos_emb=rotary).view(r, kk, new, bs, d)
                encoded = out if encoded is None else torch.cat([encoded, out], dim=2)
                cache["encoded"] = encoded
            context = None if encoded is None else encoded.reshape(encoded.shape[0], -1, d)
        out = self._attend_positions(normed, context, offset, n_complete)
        return {"output": (out, None), "context": context}

    def _attend_positions(self, normed, context, offset: int, n: int) -> torch.Tensor:
        """Tokens at positions [offset, offset + s) attend to chunk (t - m + 1) // m of n encoded chunks.

        The same ``chunked_cross_attention`` as training, on a window of whole chunks: window row i
        is position c0·m + i (c0 the first chunk a new token reads), the window holds n - c0 + 1
        chunks so the kernel's shift is m - 1 as in ``attend``, and the last (never read by these
        tokens) gets zero keys/values."""
        hl, hd, m = self.heads, self.head_dim, self.chunk_length
        q, _ = self.linear_q(normed)                        # [s, bs, hl·hd]
        s, bs = q.shape[:2]
        q = q.view(s, bs, hl, hd)
        out = q.new_zeros(s, bs, hl, hd)
        if n > 0 and context is not None:
            c0 = max(0, (offset - (m - 1)) // m)
            window = q.new_zeros((n - c0 + 1) * m, bs, hl, hd)
            window[offset - c0 * m:offset - c0 * m + s] = q
            kv, _ = self.linear_kv(context)                 # [r, k·n·bs, hl·2·hd]
            r = kv.shape[0]
            kk = kv.shape[1] // (n * bs)
            # [r, k, n, bs, hl, 2, hd] -> [bs, n - c0, r·k, hl, 2, hd], then the zero chunk
            kv = kv.view(r, kk, n, bs, hl, 2, hd)[:, :, c0:].permute(3, 2, 0, 1, 4, 5, 6).reshape(
                bs, n - c0, r * kk, hl, 2, hd)
            kv = F.pad(kv, (0, 0, 0, 0, 0, 0, 0, 0, 0, 1))
            attended = chunked_cross_attention(window, kv[..., 0, :], kv[..., 1, :], chunk_length=m,
                                               softmax_scale=1.0 / math.sqrt(hd))  # [(n-c0+1)·m, bs, hl, hd]
            out = attended[offset - c0 * m:offset - c0 * m + s]
        out, bias = self.linear_proj(out.reshape(s, bs, hl * hd))
        if bias is not None:
            out = out + bias * self._attending_rows(s, out.device, out.dtype, start=offset)
        if self.gate is not None:
            out = out * torch.tanh(self.gate)
        return out

    # ---------------------------------------------------------------------------------------
    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: Optional[dict] = None):
        """Per-layer keys without the layer axis: these parameters exist on retrieval layers only."""
        from megatron.core.dist_checkpointing.utils import replace_prefix_for_sharding

        sd = super().sharded_state_dict(prefix, (), metadata)
        replace_prefix_for_sharding(sd, prefix, f"{prefix}layer{self.layer_number}.")
        return sd


def get_retro_bias_dropout_add(training: bool, fused: bool):
    """megatron's bias-dropout-add, accepting the cross-attention's {"output": ..., "context": ...}."""
    inner = get_bias_dropout_add(training, fused)

    def bda(x_with_bias, residual, prob):
        if isinstance(x_with_bias, dict):
            x_with_bias = x_with_bias["output"]
        return inner(x_with_bias, residual, prob)

    return bda
