"""Trainable parameters of each PEFT method, per (tp, pp) rank, by FORMULA (not from built modules).

These are the counts of NVIDIA's default PEFT settings for the paper's models (shared/DESIGN.md),
written down from the method definitions (tests/ops/test_ops_planner_retro.py checks them against a
built tiny RETRO with configs/peft/<method>.yaml applied; for RETRO ``layers`` includes the
encoder's layers, which the same target names select):
  full      every parameter of the stage;
  lora      rank 32 on the fused QKV projection of every layer: A [r, d] replicated across TP,
            B [qkv_out/tp, r] sharded (the project's one sharding rule for column-parallel bases);
  adapter   two bottleneck adapters of dim 32 per layer (after attention, after the MLP), each
            W_down [d -> 32] (column-parallel) + W_up [32 -> d] (row-parallel), no norm, no bias,
            both split across TP (peft/adapters.py);
  ptuning   10 virtual tokens, an MLP prompt encoder with a 1024 bottleneck (embedding [10, d],
            Linear d->1024 + bias, Linear 1024->d + bias), replicated, on the first pipeline stage.
"""
from __future__ import annotations

from megatron_retro.config import ModelConfig

METHODS = ("full", "lora", "adapter", "ptuning")
LORA_RANK = 32
ADAPTER_DIM = 32
PTUNING_VIRTUAL_TOKENS = 10
PTUNING_BOTTLENECK = 1024


def peft_trainable(model: ModelConfig, method: str, layers: int, tp: int, first_stage: bool) -> int:
    """Trainable parameters a PEFT ``method`` adds to one TP rank of a stage of ``layers`` layers."""
    d = model.hidden_size
    if method == "lora":
        qkv = (model.num_attention_heads + 2 * (model.num_query_groups or model.num_attention_heads)) * model.head_dim
        return layers * (LORA_RANK * d + qkv * LORA_RANK // tp)
    if method == "adapter":
        return layers * 2 * (2 * d * ADAPTER_DIM // tp)
    if method == "ptuning":
        if not first_stage:
            return 0
        h = PTUNING_BOTTLENECK
        return PTUNING_VIRTUAL_TOKENS * d + (d * h + h) + (h * d + d)
    raise ValueError(f"PEFT method {method!r}: formula counts exist for {METHODS[1:]}")
