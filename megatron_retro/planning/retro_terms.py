"""RETRO's additions to the planner: parameters, FLOPs and activations of the neighbour encoder
and the chunked cross-attention (CCA), per pipeline stage.

Notation: s decoder sequence, b micro-batch, d hidden, t TP size, m chunk length, k neighbours,
r neighbour length, rho = k·r/m encoder (neighbour) tokens per decoder token, i = heads·head_dim
(attention width), R retrieval layers on a stage, E encoder layers.

Parameters (exact; tested against meta-device builds, models/retro/):
  CCA projections    q [d -> i], kv [d -> 2i] column-parallel, proj [i -> d] row-parallel
                     (+ q/kv biases split, proj bias whole, with model.add_bias_linear);
  retrieval layer    the GPT layer + CCA projections + its pre-norm (+ 1 gate scalar);
  encoder            E x (GPT layer + pre-cross-attention norm + CCA projections) + final norm,
                     built whole on the stage holding the first retrieval layer.
Forward FLOPs per decoder token (matmuls 2 per weight, attention 4·keys·i):
  retrieval layer    q and proj 4·d·i, kv over the neighbours 4·d·i·rho, attention 4·k·r·i;
  encoder layer      rho·(2·matmul params + 4·r·i self + 4·d·i q/proj + 4·m·i cross) + 4·d·i kv on
                     the chunk states (computed once per chunk, not per neighbour).
Activations (bytes, Korthikanti et al. 2022 constants with fused attention; sbh = s·b·d·bytes/2):
  retrieval layer    its CCA block: sbh·(5 + (6 + 4·rho)/t), or sbh·(11 + 4·rho)/t with sequence
                     parallelism (norm input, dropout mask, q input whole; q, attention output,
                     proj input, neighbour k and v split); nothing extra with full recomputation;
  context            2·rho·sbh (/t with SP) on every stage up to the one holding the last retrieval
                     layer: the neighbour context travels with the hidden states in the pipeline
                     payload (models/retro/payload.py) that far, so each of those stages keeps it
                     as part of its input for every micro-batch in flight; later stages get the
                     hidden states alone;
  encoder            E GPT layers + E cross blocks on rho·s tokens; the encoder is not recomputed
                     by itself, so with full recomputation of the decoder its activations live only
                     while the first retrieval layer is recomputed (one micro-batch), without it they
                     stay for every micro-batch in flight.
"""
from __future__ import annotations

from dataclasses import dataclass

from megatron_retro.config import ModelConfig, RetroConfig


def norm_params(model: ModelConfig) -> int:
    return model.hidden_size if model.normalization == "RMSNorm" else 2 * model.hidden_size


def attention_width(model: ModelConfig) -> int:
    return model.num_attention_heads * model.head_dim


def cca_params(model: ModelConfig, tp: int) -> int:
    """q / kv / proj of one cross-attention on one TP rank."""
    d, i = model.hidden_size, attention_width(model)
    sharded, replicated = d * i + d * 2 * i + i * d, 0
    if model.add_bias_linear:
        sharded += 3 * i
        replicated += d
    return sharded // tp + replicated


@dataclass(frozen=True)
class StageRetro:
    """RETRO parts of one pipeline stage."""

    retrieval_layers: int   # R
    encoder_layers: int     # E (0 unless the stage holds the first retrieval layer)
    params: int             # their parameters on one TP rank, beyond the GPT layers
    carries_context: bool = True   # the stage starts at or before the last retrieval layer


def stage_retro(model: ModelConfig, retro: RetroConfig, tp: int, first_layer: int, last_layer: int,
                layer_params) -> StageRetro:
    """RETRO parts of the stage holding 1-based decoder layers first_layer..last_layer.

    ``layer_params(model, tp)`` is the GPT layer count of planning/recommend.py."""
    numbers = retro.layer_numbers(model.num_layers)
    here = [n for n in numbers if first_layer <= n <= last_layer]
    norm = norm_params(model)
    params = len(here) * (cca_params(model, tp) + norm + (1 if retro.attention_gate else 0))
    encoder = retro.encoder_num_layers if numbers[0] in here else 0
    if encoder:
        params += encoder * (layer_params(model, tp) + norm + cca_params(model, tp)) + norm
    return StageRetro(len(here), encoder, params, carries_context=first_layer <= max(numbers, default=0))


def neighbour_ratio(retro: RetroConfig) -> float:
    return retro.num_neighbours * retro.neighbour_length / retro.chunk_length


def retro_forward_flops_per_token(model: ModelConfig, retro: RetroConfig, encoder_matmul_params: int) -> float:
    """Forward FLOPs per decoder token of every CCA layer and the encoder (see the docstring)."""
    d, i, rho = model.hidden_size, attention_width(model), neighbour_ratio(retro)
    k, r, m = retro.num_neighbours, retro.neighbour_length, retro.chunk_length
    per_retrieval = 4 * d * i + 4 * d * i * rho + 4 * k * r * i
    per_encoder = rho * (2 * encoder_matmul_params + 4 * r * i + 4 * d * i + 4 * m * i) + 4 * d * i
    return len(retro.layer_numbers(model.num_layers)) * per_retrieval + retro.encoder_num_layers * per_encoder


def retro_activation_bytes(stage: StageRetro, retro: RetroConfig, seq: int, micro_batch: int, hidden: int,
                           tp: int, in_flight: int, sequence_parallel: bool, recompute: bool,
                           act_bytes: int, gpt_activation_bytes) -> float:
    """Activation bytes RETRO adds to a stage (``gpt_activation_bytes`` = memory.activation_bytes)."""
    rho = neighbour_ratio(retro)
    sbh = seq * micro_batch * hidden * act_bytes / 2

    def cross_block(kv_tokens_ratio: float, tokens_ratio: float) -> float:
        s = sbh * tokens_ratio
        if sequence_parallel:
            return (11 * s + 4 * kv_tokens_ratio * sbh) / tp
        return 5 * s + (6 * s + 4 * kv_tokens_ratio * sbh) / tp

    context = 2 * rho * sbh / (tp if sequence_parallel else 1) if stage.carries_context else 0.0
    decoder = 0.0 if recompute else stage.retrieval_layers * cross_block(rho, 1.0)
    total = (context + decoder) * in_flight
    if stage.encoder_layers:
        encoder_tokens = int(round(seq * rho))
        encoder = gpt_activation_bytes(encoder_tokens, micro_batch, hidden, tp, stage.encoder_layers, 1,
                                       sequence_parallel=sequence_parallel, recompute=False, act_bytes=act_bytes)
        encoder += stage.encoder_layers * cross_block(1.0, rho)
        total += encoder * (1 if recompute else in_flight)
    return total
