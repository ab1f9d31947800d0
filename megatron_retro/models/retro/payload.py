"""The tensor RETRO sends between pipeline stages: decoder hidden states + neighbour context.

Notation: ns sequence, bs micro-batch, d hidden, m chunk length, l = ceil(ns / m) chunks,
k neighbours per chunk, r neighbour length, tp tensor-parallel size.

megatron's schedules send one tensor of a declared shape [S, bs, d] between stages.  RETRO's
retrieval layers need, besides the hidden states, the neighbour context: the embedded neighbour
tokens before the first retrieval layer (which runs the encoder), the encoder output after it.
Both travel in one payload, concatenated along the sequence axis:

    payload [ns + r·k·l, bs, d]  =  cat(hidden [ns, bs, d], context [r, k·l·bs, d] viewed as [r·k·l, bs, d])

(the context's batch axis is ordered (k, l, bs), so bs is innermost and the view is free).  Under
sequence parallelism both parts are split over TP along their first axis: the local payload is
[ns/tp + (r/tp)·k·l, bs, d], which is exactly megatron's ``seq_length // tp`` for the declared
``seq_length = payload_length(ns, ...)``.  Gradients flow back through the same tensor.

The context is needed only up to the last retrieval layer: a stage boundary after it carries the
hidden states alone, [ns(/tp), bs, d] (:class:`ContextIO` says, per stage, what it receives and
sends; :func:`schedule_shape_kwargs` tells megatron's schedule the per-stage shapes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ContextIO:
    """Whether one (virtual) pipeline stage receives, uses and sends the neighbour context."""

    receives: bool   # its input payload holds the context (not the first stage)
    uses: bool       # it holds a retrieval layer, or passes the context on
    sends: bool      # its output payload holds the context (not the last stage)

    @classmethod
    def of_stage(cls, offset: int, num_layers: int, retrieval_layers: list, pre_process: bool,
                 post_process: bool) -> "ContextIO":
        """The stage holding global decoder layers offset+1 .. offset+num_layers (1-based)."""
        last = max(retrieval_layers, default=0)
        sends = not post_process and offset + num_layers < last
        holds = any(offset < n <= offset + num_layers for n in retrieval_layers)
        return cls(receives=not pre_process and offset < last, uses=holds or sends, sends=sends)


def schedule_shape_kwargs(chunks: list, ns: int, micro_batch_size: int) -> dict:
    """``seq_length`` (and the per-stage p2p shapes) for megatron's forward_backward_func.

    Non-interleaved pipeline: ``adjust_tensor_shapes_fn`` gives this rank's receive / send shapes,
    [payload_length(ns)(/tp), bs, d] where the context travels, [ns(/tp), bs, d] past the last
    retrieval layer.  Interleaved (several chunks): megatron's schedule takes one shape for every
    boundary (no adjust_tensor_shapes_fn); its ``variable_seq_lengths`` shape exchange deadlocked
    over gloo here, so interleaved chunks keep the full payload (RetroModel.context_io).
    """
    from megatron.core.utils import unwrap_model

    chunk = unwrap_model(chunks[0])   # chunks may be DDP-wrapped
    config = chunk.config
    full = payload_length(ns, chunk.chunk_length, chunk.num_neighbours, chunk.neighbour_length)
    kwargs = {"seq_length": full}
    if config.pipeline_model_parallel_size == 1 or len(chunks) > 1:
        return kwargs
    sp = config.tensor_model_parallel_size if config.sequence_parallel else 1
    io, d = chunk.context_io, config.hidden_size

    def shape(with_context: bool) -> list:
        return [((full if with_context else ns) // sp, micro_batch_size, d)]

    kwargs["adjust_tensor_shapes_fn"] = lambda recv, send: (shape(io.receives), shape(io.sends))
    return kwargs


def payload_length(ns: int, chunk_length: int, num_neighbours: int, neighbour_length: int) -> int:
    """Declared sequence length of the inter-stage tensor (before the SP split)."""
    l = -(-ns // chunk_length)
    return ns + neighbour_length * num_neighbours * l


def pack(hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """hidden [s, bs, d], context [rr, k·l·bs, d] -> [s + rr·k·l, bs, d] (a new tensor)."""
    bs, d = hidden.shape[1], hidden.shape[2]
    return torch.cat([hidden, context.reshape(-1, bs, d)], dim=0)


def unpack(payload: torch.Tensor, hidden_len: int, context_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack`: views (hidden [hidden_len, bs, d], context [context_len, k·l·bs, d])."""
    s, bs, d = payload.shape
    hidden = payload[:hidden_len]
    context = payload[hidden_len:].reshape(context_len, -1, d)
    if hidden_len + context.shape[0] * context.shape[1] // bs != s:
        raise ValueError(f"RETRO payload of length {s} does not split into hidden {hidden_len} + context")
    return hidden, context


def split_lengths(local_len: int, tp_split: int, chunk_length: int, num_neighbours: int,
                  neighbour_length: int) -> tuple[int, int]:
    """(local hidden length, local context length) of a received payload of ``local_len`` rows.

    local_len·tp_split = ns·(1 + r·k/m) for ns a multiple of m.
    """
    total = local_len * tp_split
    per_chunk = chunk_length + neighbour_length * num_neighbours
    if total % per_chunk:
        raise ValueError(f"RETRO payload length {total} is not a multiple of m + r*k = {per_chunk}")
    ns = total // per_chunk * chunk_length
    return ns // tp_split, neighbour_length // tp_split
