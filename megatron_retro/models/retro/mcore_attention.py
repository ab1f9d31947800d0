"""megatron-core 0.15 RETRO's cross-attentions, re-derived for ``retro.megatron_compat: true``.

Notation: ns sequence, bs micro-batch, d hidden, m chunk length, l = ceil(ns / m) chunks,
k neighbours per chunk, r neighbour length (chunk + continuation).

Layouts (megatron-core's own, which differ from ours in cross_attention.py):
    embedded neighbours [r, bs·l·k, d]   columns ordered (bs, l, k): neighbours.reshape(bs·l·k, r)
    chunk states        [m, bs·l, d]     columns ordered (bs, l)
    encoder output      [r, k·bs·l, d]   columns ordered (k, bs, l) after the first encoder layer
    decoder context     [r·k, bs·l, d]   the encoder output viewed so each chunk sees its k·r tokens

Decoder (``McoreDecoderCrossAttention`` + :func:`mcore_decoder_bda`), on the normed states x:
  * first retrieval layer only: chunk states = x with a *ragged first* chunk (the first ns mod m
    tokens, zero-padded to m, then whole chunks); the encoder runs on the embedded neighbours
    and returns the context, with no final norm;
  * chunked cross-attention: drop the first (ns - 1) mod m tokens, zero-pad m - 1 at the end,
    cut into l chunks of m queries; chunk c attends to chunk c's k·r context tokens (no mask);
  * bias-dropout-add per chunk (the bias reaches every attending row), un-chunk, put back the
    dropped rows as zeros, then add the layer's residual.

Encoder (``McoreEncoderCrossAttention`` + :func:`mcore_encoder_bda`), first encoder layer only:
  each neighbour j's normed tokens [r, bs·l, d] attend to their chunk's states (no mask); the
  output plus bias is added to those *normed* tokens (not to the layer's residual stream), and
  the k results are stacked neighbour-major, which reorders the columns to (k, bs, l).
  ``McoreEncoderNorm`` is its pre-MLP norm, kept under megatron's key ``pre_mlp_layernorm.norm``
  (megatron normalised each neighbour's columns separately: the same as one per-token norm).

Tensor parallelism: megatron's ``CrossAttention`` (column-parallel q / kv, row-parallel output);
everything here reshapes the full hidden width after the row-parallel reduction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.transformer.attention import CrossAttention
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import build_module


def _no_inference(where: str, inference_context) -> None:
    if inference_context is not None:
        raise ValueError(f"{where}: retro.megatron_compat has no incremental decoding (megatron-core 0.15 "
                         "had none); generate without a KV cache")


class McoreDecoderCrossAttention(MegatronModule):
    """Chunked cross-attention of one retrieval layer (and the encoder on the first one)."""

    def __init__(self, config, submodules, layer_number: int = 1, attn_mask_type=AttnMaskType.padding,
                 pg_collection=None, cp_comm_type=None, *, chunk_length: int, encoder=None,
                 encoder_config=None):
        super().__init__(config=config)
        self.chunk_length = chunk_length
        self.attn = CrossAttention(config=config, submodules=submodules, layer_number=layer_number,
                                   attn_mask_type=AttnMaskType.padding, pg_collection=pg_collection)
        self.encoder = None
        if encoder is not None:
            from megatron.core.transformer.transformer_block import TransformerBlock

            # post_process=False: megatron-core 0.15's encoder output is not normed
            self.encoder = TransformerBlock(config=encoder_config, spec=encoder, pre_process=True,
                                            post_process=False, pg_collection=pg_collection)

    def _chunk_states(self, x: torch.Tensor) -> torch.Tensor:
        """[ns, bs, d] -> [m, bs·l, d]; the first chunk holds the first ns mod m tokens, zero-padded."""
        ns, bs, d = x.shape
        m = self.chunk_length
        first = ns % m
        if first:
            x = torch.cat([F.pad(x[:first], (0, 0, 0, 0, 0, m - first)), x[first:]], dim=0)
        l = x.shape[0] // m
        return x.view(l, m, bs, d).permute(1, 2, 0, 3).reshape(m, bs * l, d)

    def forward(self, hidden_states, attention_mask=None, key_value_states=None, inference_context=None,
                **unused) -> dict:
        _no_inference("RETRO cross-attention", inference_context)
        if key_value_states is None:
            raise ValueError("RETRO layer: no neighbour context reached this layer")
        ns, bs, d = hidden_states.shape
        m = self.chunk_length
        context = key_value_states
        if self.encoder is not None:
            encoded = self.encoder(hidden_states=context, attention_mask=attention_mask,
                                   context=self._chunk_states(hidden_states), context_mask=None)  # [r, k·bs·l, d]
            l = -(-ns // m)
            context = encoded.reshape(-1, bs * l, d)         # [r·k, bs·l, d]
        shift = (ns - 1) % m                                 # token t >= m-1 attends chunk (t-m+1)//m
        queries = F.pad(hidden_states[shift:], (0, 0, 0, 0, 0, m - 1))
        l = queries.shape[0] // m
        queries = queries.view(l, m, bs, d).permute(1, 2, 0, 3).reshape(m, bs * l, d)
        out, bias = self.attn(hidden_states=queries, attention_mask=None, key_value_states=context)
        return {"output": out, "bias": bias, "shift": shift, "ns": ns, "context": context}


def mcore_decoder_bda(training: bool, fused: bool):
    """Per-chunk bias-dropout-add of :class:`McoreDecoderCrossAttention`'s output, back to [ns, bs, d]."""
    inner = get_bias_dropout_add(training, fused)

    def bda(x: dict, residual: torch.Tensor, prob: float) -> torch.Tensor:
        out, bias = x["output"], x["bias"]                   # [m, bs·l, d], [d]
        y = inner((out, None if bias is None else bias.expand_as(out)), torch.zeros_like(out), prob)
        m, bl, d = y.shape
        bs = residual.shape[1]
        y = y.view(m, bs, bl // bs, d).permute(2, 0, 1, 3).reshape(-1, bs, d)   # [l·m, bs, d]
        y = F.pad(y, (0, 0, 0, 0, x["shift"], 0))[:x["ns"]]                     # [ns, bs, d]
        return y + residual

    return bda


class McoreEncoderCrossAttention(MegatronModule):
    """Each neighbour's tokens [r, bs·l, d] attend to their chunk's states [m, bs·l, d]."""

    def __init__(self, config, submodules, layer_number: int = 1, attn_mask_type=AttnMaskType.padding,
                 pg_collection=None, cp_comm_type=None, *, num_neighbours: int):
        super().__init__(config=config)
        self.num_neighbours = num_neighbours
        self.attn = CrossAttention(config=config, submodules=submodules, layer_number=layer_number,
                                   attn_mask_type=AttnMaskType.padding, pg_collection=pg_collection)

    def forward(self, hidden_states, attention_mask=None, key_value_states=None, inference_context=None,
                **unused) -> list:
        _no_inference("RETRO encoder", inference_context)
        r, cols, d = hidden_states.shape                     # [r, bs·l·k, d], columns (bs, l, k)
        k = self.num_neighbours
        per_neighbour = hidden_states.view(r, cols // k, k, d)
        results = []
        for j in range(k):
            normed = per_neighbour[:, :, j].contiguous()    # [r, bs·l, d]
            out, bias = self.attn(hidden_states=normed, attention_mask=None, key_value_states=key_value_states)
            results.append((out, bias, normed))
        return results


def mcore_encoder_bda(training: bool, fused: bool):
    """Adds each neighbour's attention output to its normed input; stacks them as [r, k·bs·l, d]."""
    inner = get_bias_dropout_add(training, fused)

    def bda(x: list, residual: torch.Tensor, prob: float) -> torch.Tensor:
        # ``residual`` (the layer's stream) is not used: megatron-core 0.15 added to the normed input.
        outs = [inner((out, None if bias is None else bias.expand_as(normed)), normed, prob)
                for out, bias, normed in x]
        r, _, d = outs[0].shape
        return torch.stack(outs, dim=1).reshape(r, -1, d)   # columns (k, bs, l)

    return bda


class McoreEncoderNorm(MegatronModule):
    """The first encoder layer's pre-MLP norm, as a child ``norm`` (megatron's checkpoint key)."""

    def __init__(self, config, submodules, **kwargs):
        super().__init__(config=config)
        self.norm = build_module(submodules, config=config, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)
