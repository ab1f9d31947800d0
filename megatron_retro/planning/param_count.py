"""Exact parameter counts of a config, per (tp, pp) rank, from the model built on the meta device.

Each pipeline stage is built for real (megatron decides which layers, embedding and output layer
it holds) on ``torch.device("meta")``, so no memory is used even for 43B.  Tensor parallelism
is read from the parameters' own megatron attributes (``tensor_model_parallel``): a sharded
parameter holds numel/tp elements on every TP rank, a replicated one (norms) holds all of them.
The embedding and output layer are padded for the requested TP size, as in training.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from megatron_retro.config import ModelConfig, ParallelConfig


@dataclass
class StageCount:
    pp_rank: int
    layers: int
    sharded: int       # elements of TP-sharded parameters (full size, before the TP split)
    replicated: int    # elements of parameters every TP rank holds whole
    trainable_peft: int = 0

    def per_tp_rank(self, tp: int) -> int:
        return self.sharded // tp + self.replicated


@dataclass
class ParamCounts:
    tp: int
    pp: int
    vocab_size: int          # padded
    total: int
    stages: list = field(default_factory=list)

    def per_rank(self) -> list[dict]:
        return [{"tp_rank": t, "pp_rank": s.pp_rank, "params": s.per_tp_rank(self.tp)}
                for s in self.stages for t in range(self.tp)]


def _ensure_single_process_parallel_state() -> None:
    """A world-size-1 gloo group and TP1/PP1 megatron state: enough to build modules on meta."""
    from megatron.core import parallel_state

    from megatron_retro.parallel.initialize import initialize_parallel

    if not parallel_state.model_parallel_is_initialized():
        initialize_parallel(ParallelConfig(), seed=0)


def count_parameters(model: ModelConfig, tp: int, pp: int, vocab_size: int, build_chunk=None) -> ParamCounts:
    """Build every pipeline stage of ``model`` on the meta device and count its parameters."""
    from megatron.core import parallel_state as ps

    from megatron_retro.models.gpt import build_gpt_chunk, padded_vocab_size
    from megatron_retro.models.transformer_config import make_transformer_config

    _ensure_single_process_parallel_state()
    build_chunk = build_chunk or build_gpt_chunk
    padded = padded_vocab_size(vocab_size, model.make_vocab_size_divisible_by, tp)
    config = make_transformer_config(model, dataclasses.replace(ParallelConfig(), pp=pp), precision="bf16")
    saved = (ps.get_pipeline_model_parallel_world_size(), ps.get_pipeline_model_parallel_rank())
    stages = []
    try:
        for rank in range(pp):
            ps.set_pipeline_model_parallel_world_size(pp)
            ps.set_pipeline_model_parallel_rank(rank)
            with torch.device("meta"):
                chunk = build_chunk(model, config, padded, pre_process=rank == 0, post_process=rank == pp - 1)
            sharded = sum(p.numel() for p in chunk.parameters() if getattr(p, "tensor_model_parallel", False))
            replicated = sum(p.numel() for p in chunk.parameters() if not getattr(p, "tensor_model_parallel", False))
            stages.append(StageCount(rank, len(chunk.decoder.layers), sharded, replicated))
            del chunk
    finally:
        ps.set_pipeline_model_parallel_world_size(saved[0])
        ps.set_pipeline_model_parallel_rank(saved[1])
    total = sum(s.sharded + s.replicated for s in stages)
    return ParamCounts(tp=tp, pp=pp, vocab_size=padded, total=total, stages=stages)


def closed_form_gpt_params(model: ModelConfig, padded_vocab: int) -> int:
    """The textbook count for our GPT: embeddings, attention, (gated) MLP, norms."""
    d, f, layers = model.hidden_size, model.ffn_size, model.num_layers
    hd = model.head_dim
    q = model.num_attention_heads * hd
    kv = (model.num_query_groups or model.num_attention_heads) * hd
    norm = d if model.normalization == "RMSNorm" else 2 * d
    fc1_out = 2 * f if model.gated_mlp else f
    per_layer = d * (q + 2 * kv) + q * d + d * fc1_out + f * d + 2 * norm
    if model.add_bias_linear:
        per_layer += (q + 2 * kv) + d + fc1_out + d
    embeddings = padded_vocab * d * (2 if model.untie_embeddings else 1)
    if model.position_embedding == "learned_absolute":
        embeddings += model.seq_length * d
    return embeddings + layers * per_layer + norm
