"""Recommend a TP/PP/DP layout and micro-batch for a model, PEFT method and N x 80 GB GPUs.

For every layout (tp in 1,2,4,8 dividing the heads; pp dividing the layers; dp = N / (tp*pp)),
micro-batch (1, 2, 4, 8) and recomputation (off, full) it computes the per-GPU memory of the
fullest pipeline stage (memory.py: weights, grads, optimizer state, activations incl. in-flight
1F1B micro-batches and fp32 logits) and an estimated step time, and keeps the fastest layout that
fits in ``usable_fraction`` of the GPU memory (the rest is CUDA context, NCCL buffers and
allocator fragmentation).  Ties go to less TP, then less PP, then no recomputation.

Step time model (stated in every output): one global batch of ``global_batch`` sequences takes
    executed FLOPs / (N * peak * MFU) * (1 + (pp - 1) / micro-batches per DP rank)
with executed FLOPs per token = passes * (2 * matmul params + 4 * s * d_attn * layers + 2 * d * V):
3 passes (forward, input grads, weight grads) for full training, 2 for PEFT (frozen base weights
need no weight gradients; the adapters' own weight grads are negligible), plus 1 forward pass
with full recomputation.  The last factor is the 1F1B pipeline bubble.  TP/DP communication is
not modelled (tie-break towards less TP).  Parameter counts are exact for megatron's even layer
split (tested against meta-device builds); PEFT trainable counts come from peft_counts.py
(formulas).  RETRO (model.arch=retro, with its RetroConfig) adds the neighbour encoder and the
chunked cross-attention: parameters, FLOPs and activations from retro_terms.py.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

from megatron_retro.config import ModelConfig, RetroConfig
from megatron_retro.planning import retro_terms
from megatron_retro.planning.memory import GIB, MemoryBreakdown, activation_bytes, estimate_memory
from megatron_retro.planning.peft_counts import METHODS, peft_trainable

GPU_MEMORY_GB = 80
A100_BF16_TFLOPS = 312.0
DEFAULT_MFU = 0.40
DEFAULT_USABLE = 0.90
DEFAULT_GLOBAL_BATCH = 128


@dataclass(frozen=True)
class StageParams:
    """Parameters one TP rank of one pipeline stage holds."""

    pp_rank: int
    layers: int
    params: int
    retro: retro_terms.StageRetro | None = None  # RETRO parts of the stage (model.arch=retro)

    @property
    def peft_layers(self) -> int:
        """Layers PEFT methods attach to: decoder layers plus RETRO encoder layers (same modules)."""
        return self.layers + (self.retro.encoder_layers if self.retro else 0)


def _padded_vocab(vocab: int, divisible_by: int, tp: int) -> int:
    multiple = divisible_by * tp
    return -(-vocab // multiple) * multiple


def layer_params(model: ModelConfig, tp: int) -> int:
    """Parameters of one transformer layer on one TP rank (linears split, norms and row biases whole)."""
    d, f = model.hidden_size, model.ffn_size
    q = model.num_attention_heads * model.head_dim
    kv = (model.num_query_groups or model.num_attention_heads) * model.head_dim
    fc1_out = 2 * f if model.gated_mlp else f
    norm = d if model.normalization == "RMSNorm" else 2 * d
    sharded = d * (q + 2 * kv) + q * d + d * fc1_out + f * d
    replicated = 2 * norm
    if model.add_bias_linear:
        sharded += (q + 2 * kv) + fc1_out
        replicated += 2 * d  # row-parallel output biases are not split
    return sharded // tp + replicated


def _retro(model: ModelConfig, retro: RetroConfig | None) -> RetroConfig | None:
    if model.arch != "retro":
        return None
    return retro if retro is not None else RetroConfig()


def stage_params(model: ModelConfig, vocab_size: int, tp: int, pp: int,
                 retro: RetroConfig | None = None) -> list[StageParams]:
    """Per-stage parameters on one TP rank for megatron's even split of the layers."""
    retro = _retro(model, retro)
    if model.num_layers % pp:
        raise ValueError(f"pp={pp} does not divide num_layers={model.num_layers}")
    v = _padded_vocab(vocab_size, model.make_vocab_size_divisible_by, tp)
    d = model.hidden_size
    per_stage = model.num_layers // pp
    norm = d if model.normalization == "RMSNorm" else 2 * d
    out = []
    for r in range(pp):
        n = per_stage * layer_params(model, tp)
        if r == 0:
            n += v * d // tp
            if model.position_embedding == "learned_absolute":
                n += model.seq_length * d
        if r == pp - 1:
            n += norm
            if model.untie_embeddings or pp > 1:
                n += v * d // tp  # output layer (a copy of the embedding when tied and pp > 1)
        extra = None
        if retro is not None:
            extra = retro_terms.stage_retro(model, retro, tp, r * per_stage + 1, (r + 1) * per_stage, layer_params)
            n += extra.params
        out.append(StageParams(r, per_stage, n, extra))
    return out


def flops_per_token(model: ModelConfig, vocab_size: int, seq: int, method: str, recompute: bool,
                    retro: RetroConfig | None = None) -> float:
    """Executed training FLOPs per token (see the module docstring)."""
    d = model.hidden_size
    v = _padded_vocab(vocab_size, model.make_vocab_size_divisible_by, 1)
    layer_matmul = layer_params(model, 1) - 2 * (d if model.normalization == "RMSNorm" else 2 * d)
    attn = model.num_attention_heads * model.head_dim
    forward = 2 * model.num_layers * layer_matmul + 4 * seq * attn * model.num_layers + 2 * d * v
    retro = _retro(model, retro)
    if retro is not None:
        forward += retro_terms.retro_forward_flops_per_token(model, retro, layer_matmul)
    passes = (3 if method == "full" else 2) + (1 if recompute else 0)
    return passes * forward


@dataclass
class LayoutPlan:
    method: str
    gpus: int
    tp: int
    pp: int
    dp: int
    micro_batch: int
    recompute: bool
    sequence_parallel: bool
    global_batch: int
    seq_length: int
    trainable_per_gpu: int                 # on the fullest stage
    memory: MemoryBreakdown                # bytes, fullest stage, with the chosen recomputation
    activations_no_recompute: float        # bytes, fullest stage, incl. the fp32 logits of the last stage
    activations_recompute: float           # bytes, fullest stage, incl. the fp32 logits of the last stage
    step_time_s: float
    tokens_per_s: float
    assumptions: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["memory"] = {k: v for k, v in asdict(self.memory).items()}
        out["memory"]["total"] = self.memory.total
        out["memory_gib"] = self.memory.as_gib()
        return out


def plan_layout(model: ModelConfig, vocab_size: int, method: str, gpus: int, tp: int, pp: int,
                micro_batch: int, recompute: bool, precision: str = "bf16",
                global_batch: int = DEFAULT_GLOBAL_BATCH, seq_length: int | None = None,
                distributed_optimizer: bool = False, sequence_parallel: bool | None = None,
                peak_tflops: float = A100_BF16_TFLOPS, mfu: float = DEFAULT_MFU,
                retro: RetroConfig | None = None) -> LayoutPlan:
    """Memory of the fullest stage and the estimated step time of one layout."""
    retro = _retro(model, retro)
    if method not in METHODS:
        raise ValueError(f"method {method!r}: must be one of {METHODS}")
    if gpus % (tp * pp):
        raise ValueError(f"{gpus} GPUs are not divisible by tp*pp={tp * pp}")
    dp = gpus // (tp * pp)
    seq = seq_length or model.seq_length
    sp = (tp > 1) if sequence_parallel is None else sequence_parallel
    act_bytes = 4 if precision == "fp32" else 2
    v = _padded_vocab(vocab_size, model.make_vocab_size_divisible_by, tp)
    worst = None
    for stage in stage_params(model, vocab_size, tp, pp, retro):
        in_flight = min(pp - stage.pp_rank, max(1, global_batch // (dp * micro_batch)))
        acts = {rc: activation_bytes(seq, micro_batch, model.hidden_size, tp, stage.layers, in_flight,
                                     sequence_parallel=sp, recompute=rc, act_bytes=act_bytes)
                for rc in (False, True)}
        if stage.retro is not None:
            for rc in acts:
                acts[rc] += retro_terms.retro_activation_bytes(
                    stage.retro, retro, seq, micro_batch, model.hidden_size, tp, in_flight, sp, rc, act_bytes,
                    activation_bytes)
        logits = seq * micro_batch * v / tp * 4 if stage.pp_rank == pp - 1 else 0.0
        if method == "full":
            trainable = stage.params
            mem = estimate_memory(stage.params, trainable, "full", precision, dp, distributed_optimizer,
                                  acts[recompute], logits)
        else:
            trainable = peft_trainable(model, method, stage.peft_layers, tp, first_stage=stage.pp_rank == 0)
            mem = estimate_memory(stage.params + trainable, trainable, "peft", precision, dp,
                                  distributed_optimizer, acts[recompute], logits)
        if worst is None or mem.total > worst[0].total:
            worst = (mem, trainable, {rc: a + logits for rc, a in acts.items()})
    mem, trainable, acts = worst
    micro_batches = max(1, global_batch // (dp * micro_batch))
    flops = flops_per_token(model, vocab_size, seq, method, recompute, retro) * global_batch * seq
    step = flops / (gpus * peak_tflops * 1e12 * mfu) * (1 + (pp - 1) / micro_batches)
    return LayoutPlan(method, gpus, tp, pp, dp, micro_batch, recompute, sp, global_batch, seq, trainable, mem,
                      acts[False], acts[True], step, global_batch * seq / step,
                      {"gpu_memory_gb": GPU_MEMORY_GB, "peak_tflops": peak_tflops, "mfu": mfu,
                       "precision": precision, "distributed_optimizer": distributed_optimizer,
                       "peft_counts": "formula" if method != "full" else "exact"})


def recommend(model: ModelConfig, vocab_size: int, method: str, gpus: int, *, precision: str = "bf16",
              global_batch: int = DEFAULT_GLOBAL_BATCH, seq_length: int | None = None,
              distributed_optimizer: bool = False, gpu_memory_gb: float = GPU_MEMORY_GB,
              usable_fraction: float = DEFAULT_USABLE, peak_tflops: float = A100_BF16_TFLOPS,
              mfu: float = DEFAULT_MFU, max_tp: int = 8, retro: RetroConfig | None = None) -> LayoutPlan | None:
    """The fastest layout that fits (None when no layout of ``gpus`` GPUs holds the model)."""
    budget = gpu_memory_gb * 1e9 * usable_fraction
    best = None
    tps = [t for t in (1, 2, 4, 8) if t <= max_tp and model.num_attention_heads % t == 0
           and (model.num_query_groups or model.num_attention_heads) % t == 0]
    pps = [p for p in range(1, model.num_layers + 1) if model.num_layers % p == 0]
    # RETRO recomputes too: full recompute keeps each layer's (hidden, context) input (models/retro/model.py)
    for tp, pp, mb, rc in itertools.product(tps, pps, (1, 2, 4, 8), (False, True)):
        if gpus % (tp * pp):
            continue
        dp = gpus // (tp * pp)
        if global_batch % (dp * mb):
            continue
        plan = plan_layout(model, vocab_size, method, gpus, tp, pp, mb, rc, precision, global_batch, seq_length,
                           distributed_optimizer, peak_tflops=peak_tflops, mfu=mfu, retro=retro)
        if plan.memory.total > budget:
            continue
        key = (round(plan.step_time_s, 6), tp, pp, rc, -mb)
        if best is None or key < best[0]:
            best = (key, plan)
    if best is None:
        return None
    best[1].assumptions.update({"gpu_memory_gb": gpu_memory_gb, "usable_fraction": usable_fraction})
    return best[1]


def format_recommendation(name: str, plan: LayoutPlan | None, method: str, gpus: int) -> str:
    if plan is None:
        return f"{name} {method} on {gpus} GPUs: no layout fits"
    m = plan.memory
    g = 1 / GIB
    return (f"{name} {method:<8} {gpus:>4} GPUs: tp={plan.tp} pp={plan.pp} dp={plan.dp} mb={plan.micro_batch} "
            f"recompute={'full' if plan.recompute else 'off'} | GiB/GPU weights {m.weights * g:.1f} grads "
            f"{m.grads * g:.1f} optim {m.optimizer * g:.1f} acts {m.activations * g:.1f} "
            f"(no-recompute {plan.activations_no_recompute * g:.1f}, recompute {plan.activations_recompute * g:.1f})"
            f" total {m.total * g:.1f} | step {plan.step_time_s:.2f} s at MFU {plan.assumptions['mfu']:.0%}")
