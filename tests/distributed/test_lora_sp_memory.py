"""LoRA under sequence parallelism keeps only this rank's input shard for backward (megatron's rule
for its own linears) and re-gathers it: the saved activation bytes of a column-parallel LoRA
linear at TP2+SP equal the frozen layer's plus the LoRA branch's own (x_local for dA, H for dB),
and the gradients equal those of the same layer keeping the gathered input.  One 2-rank launch
(tests/distributed/worker_lora_sp_memory.py)."""
import os

import pytest
from launch import torchrun

pytestmark = pytest.mark.distributed
HERE = os.path.dirname(__file__)


def test_lora_sp_saves_the_local_shard_and_regathers():
    (row,) = torchrun(os.path.join(HERE, "worker_lora_sp_memory.py"), 2, timeout=600)
    # frozen base under SP saves no activation (no dW); LoRA adds its input shard and H [s, b, r]
    # (plus the folded path's kept stacked weight, when it applies: weight-sized, once per step)
    kept = row["frozen_bytes"] + row["h_bytes"] + row["fold_buffer_bytes"]
    assert row["lora_bytes"] == kept + row["x_local_bytes"], row
    # control: keeping the gathered input instead costs tp x the input shard
    assert row["rule_off_bytes"] == kept + row["x_full_bytes"], row
    assert row["same_grads"] and row["grad_names"] == ["lora_a", "lora_b"], row
