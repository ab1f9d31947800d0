"""`megatron-retro plan`: parameter counts and per-GPU memory of a config at a (tp, pp) layout."""
from __future__ import annotations

from megatron_retro.config import RunConfig
from megatron_retro.planning import retro_terms
from megatron_retro.planning.memory import activation_bytes, estimate_memory
from megatron_retro.planning.param_count import count_parameters
from megatron_retro.planning.recommend import layer_params

# NVIDIA's default PEFT setting for these models: LoRA rank 32 on the fused QKV projection.
DEFAULT_LORA_RANK = 32


def lora_qkv_trainable(cfg: RunConfig, layers: int, tp: int, rank: int = DEFAULT_LORA_RANK) -> int:
    """LoRA on linear_qkv of ``layers`` layers, per TP rank: A [r, d] replicated, B [qkv/tp, r] sharded."""
    m = cfg.model
    qkv = (m.num_attention_heads + 2 * (m.num_query_groups or m.num_attention_heads)) * m.head_dim
    return layers * (rank * m.hidden_size + qkv * rank // tp)


def make_plan(cfg: RunConfig, tp: int, pp: int, vocab_size: int, dp: int = 1, micro_batch: int = 1,
              seq_length: int | None = None, distributed_optimizer: bool = True) -> dict:
    model = cfg.model
    seq = seq_length or model.seq_length
    build_chunk = None
    if model.arch == "retro":
        from megatron_retro.models.retro.builder import retro_chunk_builder

        build_chunk = retro_chunk_builder(cfg.retro)
    counts = count_parameters(model, tp, pp, vocab_size, build_chunk=build_chunk)
    precision = "fp32" if cfg.train.precision == "fp32" else "bf16"
    act_bytes = 4 if precision == "fp32" else 2
    stages, first_layer = [], 1
    sp = cfg.parallel.sequence_parallel and tp > 1
    for stage in counts.stages:
        on_rank = stage.per_tp_rank(tp)
        acts = activation_bytes(seq, micro_batch, model.hidden_size, tp, stage.layers, in_flight=pp - stage.pp_rank,
                                sequence_parallel=sp, recompute=cfg.train.recompute, act_bytes=act_bytes)
        peft_layers = stage.layers
        if model.arch == "retro":  # the encoder and CCA (its parameters are in the meta-device count)
            extra = retro_terms.stage_retro(model, cfg.retro, tp, first_layer, first_layer + stage.layers - 1,
                                            layer_params)
            acts += retro_terms.retro_activation_bytes(extra, cfg.retro, seq, micro_batch, model.hidden_size, tp,
                                                       pp - stage.pp_rank, sp, cfg.train.recompute, act_bytes,
                                                       activation_bytes)
            peft_layers += extra.encoder_layers  # LoRA on linear_qkv reaches the encoder's layers too
        first_layer += stage.layers
        logits = seq * micro_batch * counts.vocab_size / tp * 4 if stage.pp_rank == pp - 1 else 0.0
        lora = lora_qkv_trainable(cfg, peft_layers, tp)
        stages.append({
            "pp_rank": stage.pp_rank, "layers": stage.layers, "params_per_tp_rank": on_rank,
            "memory_gib": {
                "full": estimate_memory(on_rank, on_rank, "full", precision, dp, distributed_optimizer,
                                        acts, logits).as_gib(),
                "peft_lora_r32_qkv": estimate_memory(on_rank + lora, lora, "peft", precision, dp,
                                                     distributed_optimizer, acts, logits).as_gib(),
            },
        })
    return {
        "model": {"num_layers": model.num_layers, "hidden_size": model.hidden_size,
                  "num_attention_heads": model.num_attention_heads, "ffn_hidden_size": model.ffn_size,
                  "vocab_size_padded": counts.vocab_size, "seq_length": seq},
        "tp": tp, "pp": pp, "dp": dp, "micro_batch": micro_batch, "precision": precision,
        "params_total": counts.total,
        "params_per_rank": counts.per_rank(),
        "stages": stages,
        "assumptions": "memory: see megatron_retro/planning/memory.py; LoRA trainable counts by formula",
    }


def format_plan(plan: dict) -> str:
    lines = [f"model: {plan['model']}",
             f"layout: tp={plan['tp']} pp={plan['pp']} dp={plan['dp']} micro_batch={plan['micro_batch']} "
             f"({plan['precision']})",
             f"params_total: {plan['params_total']:,} ({plan['params_total'] / 1e9:.3f} B)",
             f"{'pp_rank':>7} {'layers':>6} {'params/tp-rank':>16} {'full GiB':>9} {'LoRA GiB':>9}  "
             "(full: weights/grads/optim/acts)"]
    for s in plan["stages"]:
        full, lora = s["memory_gib"]["full"], s["memory_gib"]["peft_lora_r32_qkv"]
        lines.append(f"{s['pp_rank']:>7} {s['layers']:>6} {s['params_per_tp_rank']:>16,} {full['total']:>9.2f} "
                     f"{lora['total']:>9.2f}  ({full['weights']}/{full['grads']}/{full['optimizer']}/"
                     f"{full['activations']})")
    return "\n".join(lines)
