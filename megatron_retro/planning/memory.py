"""Per-GPU memory of a (tp, pp) layout: weights, gradients, optimizer state and activations.

Bytes per parameter (megatron mixed precision, grads reduced in fp32, Adam):
  full fine-tuning  weights 2 (bf16) | grads 4 (fp32 buffer) | optimizer 12 (fp32 master + m + v),
                    the optimizer share divided by DP with the distributed optimizer;
  PEFT              frozen base weights 2; adapters (kept in fp32) weights 4 | grads 4 | m + v 8;
  fp32 runs (CPU)   weights 4 | grads 4 | optimizer 8 (no master copy).
Activations per layer and micro-batch follow Korthikanti et al. 2022 ("Reducing activation
recomputation"), with fused (flash / SDPA) attention so no s^2 term:
  s*b*h*(10 + 24/t) bytes without sequence parallelism, s*b*h*34/t with it,
  2*s*b*h/t (the layer input only) with full recomputation;
the first pipeline stage of 1F1B holds pp micro-batches in flight, stage r holds pp - r.
The last stage adds the fp32 logits, s*b*V/t*4 bytes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 1024 ** 3


@dataclass
class MemoryBreakdown:
    weights: float
    grads: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations

    def as_gib(self) -> dict:
        out = {k: round(v / GIB, 3) for k, v in asdict(self).items()}
        out["total"] = round(self.total / GIB, 3)
        return out


def activation_bytes(seq: int, micro_batch: int, hidden: int, tp: int, layers: int, in_flight: int,
                     sequence_parallel: bool, recompute: bool, act_bytes: int = 2) -> float:
    sbh = seq * micro_batch * hidden * act_bytes / 2  # the formula's constants assume 2-byte activations
    if recompute:
        per_layer = 2 * sbh / tp
    elif sequence_parallel:
        per_layer = 34 * sbh / tp
    else:
        per_layer = sbh * (10 + 24 / tp)
    return per_layer * layers * in_flight


def estimate_memory(params_on_rank: int, trainable_on_rank: int, mode: str, precision: str, dp: int,
                    distributed_optimizer: bool, activations: float, logits: float) -> MemoryBreakdown:
    """mode 'full' trains every parameter; 'peft' trains ``trainable_on_rank`` fp32 adapter params."""
    if precision == "fp32":
        if mode == "full":
            return MemoryBreakdown(4 * params_on_rank, 4 * params_on_rank, 8 * params_on_rank, activations + logits)
        base = params_on_rank - trainable_on_rank
        return MemoryBreakdown(4 * base + 4 * trainable_on_rank, 4 * trainable_on_rank, 8 * trainable_on_rank,
                               activations + logits)
    if mode == "full":
        opt = 12 * params_on_rank / (dp if distributed_optimizer else 1)
        return MemoryBreakdown(2 * params_on_rank, 4 * params_on_rank, opt, activations + logits)
    base = params_on_rank - trainable_on_rank
    return MemoryBreakdown(2 * base + 4 * trainable_on_rank, 4 * trainable_on_rank, 8 * trainable_on_rank,
                           activations + logits)
