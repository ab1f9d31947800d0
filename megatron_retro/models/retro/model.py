"""RetroModel: megatron-core's GPTModel whose retrieval layers read a neighbour context.

Notation: ns sequence, bs micro-batch, d hidden, m chunk length, l = ns / m chunks, k neighbours
per chunk, r neighbour length, tp tensor-parallel size, "(/tp)" split by sequence parallelism.

    input_ids   [bs, ns]            decoder tokens (first stage)
    neighbours  int64 [bs, l, k, r] retrieved neighbour tokens of each chunk (first stage)
    context     [r(/tp), k·l·bs, d] embedded neighbours, replaced by the encoder output at the
                                    first retrieval layer (see cross_attention.py)

The first stage embeds tokens and neighbours with the same word embedding.  Between pipeline
stages the hidden states and the context travel together in one payload of declared shape
[payload_length(ns)(/tp), bs, d] (payload.py), so retrieval layers may sit on any stage and the
encoder's gradient reaches the first stage's embedding.  Past the stage holding the last
retrieval layer the payload is the hidden states alone [ns(/tp), bs, d] (``context_io``; not with
interleaving, whose schedule declares one shape for every boundary).  Parameter names of the GPT parts are
the GPTModel's, so a GPT checkpoint loads into the decoder (retro/from_gpt.py).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from megatron.core import tensor_parallel
from megatron.core.models.gpt import GPTModel
from megatron.core.utils import make_viewless_tensor

from megatron_retro.config import RetroConfig
from megatron_retro.models.fused_loss import FusedOutputLossMixin
from megatron_retro.models.retro import payload


class RetroModel(FusedOutputLossMixin, GPTModel):
    """GPTModel + neighbour embedding, context-carrying decoder loop and pipeline payload."""

    def __init__(self, *args, retro: RetroConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunk_length = retro.chunk_length
        self.num_neighbours = retro.num_neighbours
        self.neighbour_length = retro.neighbour_length
        self._payload: Optional[torch.Tensor] = None
        # Which pipeline boundaries carry the neighbour context: only up to the last retrieval layer.
        from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

        offset = get_transformer_layer_offset(self.config, vp_stage=kwargs.get("vp_stage"))
        if self.config.virtual_pipeline_model_parallel_size:
            # interleaved: megatron's schedule sends one declared shape (the full payload) everywhere
            self.context_io = payload.ContextIO(receives=not self.pre_process, uses=True,
                                                sends=not self.post_process)
        else:
            self.context_io = payload.ContextIO.of_stage(
                offset, len(self.decoder.layers), retro.layer_numbers(self.config.num_layers),
                self.pre_process, self.post_process)

    # ------------------------------------------------------------------------------------------
    def set_input_tensor(self, input_tensor) -> None:
        """The schedule hands the previous stage's payload here (a list of one tensor)."""
        if isinstance(input_tensor, list):
            if len(input_tensor) != 1:
                raise ValueError(f"RetroModel: expected one input tensor, got {len(input_tensor)}")
            input_tensor = input_tensor[0]
        self._payload = input_tensor

    def _sp_size(self) -> int:
        return self.config.tensor_model_parallel_size if self.config.sequence_parallel else 1

    def embed_neighbours(self, neighbours: torch.Tensor) -> torch.Tensor:
        """int64 [bs, l, k, r] -> context [r(/tp), k·l·bs, d] (same word embedding as the decoder)."""
        bs, l, k, r = self._check_neighbours(neighbours)
        return self._embed_neighbour_rows(neighbours.permute(2, 1, 0, 3).reshape(k * l * bs, r))  # rows (k, l, bs)

    def _check_neighbours(self, neighbours: torch.Tensor) -> tuple:
        bs, l, k, r = neighbours.shape
        if k != self.num_neighbours or r != self.neighbour_length:
            raise ValueError(f"neighbours: shape {tuple(neighbours.shape)}, expected [bs, l, k={self.num_neighbours}, "
                             f"r={self.neighbour_length}]")
        return bs, l, k, r

    def _embed_neighbour_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """int64 [N, r] neighbour rows -> [r(/tp), N, d], positions 0..r-1."""
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand(*ids.shape)
        # Marked so that hooks on the embedding which edit the decoder input (P-tuning's virtual
        # tokens) leave retrieved neighbours alone.
        self.embedding.embedding_neighbours = True
        try:
            return self.embedding(input_ids=ids, position_ids=positions)  # [r(/tp), k·l·bs, d]
        finally:
            self.embedding.embedding_neighbours = False

    def forward(self, input_ids: Optional[torch.Tensor], position_ids: Optional[torch.Tensor],
                attention_mask: Optional[torch.Tensor], labels: Optional[torch.Tensor] = None,
                neighbours: Optional[torch.Tensor] = None, loss_mask: Optional[torch.Tensor] = None,
                inference_context=None, runtime_gather_output: Optional[bool] = None,
                context: Optional[torch.Tensor] = None):
        """Per-token losses [bs, ns] (labels given), logits [bs, ns, vocab/tp] (last stage), or the
        payload for the next stage.  ``context`` (encoded neighbours) may replace ``neighbours``."""
        hidden = None
        if self.pre_process:
            if context is None and neighbours is not None and neighbours.shape[1] > 0 and self.context_io.uses:
                context = self.embed_neighbours(neighbours)
        elif self._payload is None:
            raise ValueError("RetroModel: a non-first pipeline stage got no input payload")
        elif self.context_io.receives:
            lengths = payload.split_lengths(self._payload.shape[0], self._sp_size(), self.chunk_length,
                                            self.num_neighbours, self.neighbour_length)
            hidden, context = payload.unpack(self._payload, *lengths)
        else:   # past the last retrieval layer: the payload is the hidden states alone
            hidden = self._payload
        pre = self._preprocess(input_ids=input_ids, position_ids=position_ids, decoder_input=hidden,
                               inference_context=inference_context)
        decoder_input, rotary_pos_emb, rotary_cos, rotary_sin, sequence_len_offset = pre[:5]
        hidden, context = self._run_decoder(decoder_input, attention_mask, context, rotary_pos_emb,
                                            inference_context, sequence_len_offset)
        if not self.post_process:
            if not self.context_io.sends:
                return hidden                       # [ns(/tp), bs, d]
            if context is None:
                raise ValueError("RetroModel: no neighbour context to send to the next stage")
            return payload.pack(hidden, context)
        return self._postprocess(
            hidden_states=hidden, input_ids=input_ids, position_ids=position_ids, labels=labels,
            rotary_pos_emb=rotary_pos_emb, rotary_pos_cos=rotary_cos, rotary_pos_sin=rotary_sin,
            mtp_in_postprocess=False, loss_mask=loss_mask, decoder_input=decoder_input,
            attention_mask=attention_mask, sequence_len_offset=sequence_len_offset,
            runtime_gather_output=runtime_gather_output, inference_context=inference_context)

    def _run_decoder(self, hidden, attention_mask, context, rotary_pos_emb, inference_context,
                     sequence_len_offset):
        """The decoder block's layers, threading the context through; final norm on the last stage."""
        rng = tensor_parallel.get_cuda_rng_tracker().fork() if self.config.sequence_parallel \
            else contextlib.nullcontext()
        if hasattr(hidden, "unwrap"):  # megatron wraps the embedding output in inference mode
            hidden = hidden.unwrap()
        full_recompute = self.config.recompute_granularity == "full" and self.training \
            and inference_context is None
        with rng:
            for layer in self.decoder.layers:
                def run(hidden, context, layer=layer):
                    return layer(hidden_states=hidden, attention_mask=attention_mask, context=context,
                                 rotary_pos_emb=rotary_pos_emb, inference_context=inference_context,
                                 sequence_len_offset=sequence_len_offset)
                if full_recompute:   # keep each layer's inputs (hidden, context); redo it in backward
                    hidden, context = tensor_parallel.checkpoint(run, False, hidden, context)
                else:
                    hidden, context = run(hidden, context)
        if self.decoder.final_layernorm is not None:
            hidden = self.decoder.final_layernorm(hidden)
        hidden = make_viewless_tensor(inp=hidden, requires_grad=True, keep_graph=True)
        return hidden, context
