"""``train:`` (the optimisation schedule) and ``checkpoint:`` (sharded, resumable checkpoints)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from megatron_retro.config.base import cfg, note, require


@dataclass
class TrainConfig:
    """Optimisation schedule."""

    steps: int = cfg(100, "optimizer steps to run (total, including resumed ones)")
    micro_batch_size: int = cfg(4, "sequences per micro-batch per data-parallel rank")
    global_batch_size: Optional[int] = cfg(None, "sequences per step over all DP ranks (None = micro*dp)")
    lr: float = cfg(1e-3, "peak learning rate")
    min_lr: float = cfg(1e-4, "final learning rate of the decay")
    lr_warmup_steps: int = cfg(10, "linear warm-up steps")
    lr_decay_style: Literal["cosine", "linear", "constant"] = cfg("cosine", "decay after warm-up")
    weight_decay: float = cfg(0.01, "AdamW weight decay")
    adam_beta1: float = cfg(0.9, "Adam beta1")
    adam_beta2: float = cfg(0.95, "Adam beta2")
    adam_eps: float = cfg(1e-8, "Adam epsilon")
    clip_grad: float = cfg(1.0, "global gradient-norm clip (0 = off)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = cfg("auto", "auto = bf16 on CUDA, fp32 on CPU")
    seed: int = cfg(1234, "seed of weight init and dropout")
    log_interval: int = cfg(1, "steps between progress-bar / metrics updates")
    eval_interval: int = cfg(50, "steps between held-out evaluations (0 = only at the end)")
    eval_iters: int = cfg(4, "micro-batches per held-out evaluation")
    lr_mult: list[str] = cfg(
        [], "per-parameter learning-rate multipliers, entries 'SUBSTR=M': train.lr and train.min_lr times M "
            "for every trainable parameter whose name contains SUBSTR; the last matching entry wins, e.g. "
            "[linear_proj=0.1,layers.0.=1] (empty = one rate for all)")
    recompute: bool = cfg(False, "recompute activations of every layer in backward (each layer keeps only "
                                 "its input; selective recompute: model.recompute_modules)")

    def __post_init__(self) -> None:
        for name in ("steps", "micro_batch_size", "log_interval", "eval_iters"):
            require(getattr(self, name) >= 1, f"train.{name}={getattr(self, name)}: must be >= 1")
        require(self.global_batch_size is None or self.global_batch_size >= 1,
                 f"train.global_batch_size={self.global_batch_size}: must be >= 1")
        require(self.lr > 0, f"train.lr={self.lr}: must be > 0")
        require(0 <= self.min_lr <= self.lr, f"train.min_lr={self.min_lr}: must be in [0, train.lr={self.lr}]")
        require(self.lr_warmup_steps >= 0, f"train.lr_warmup_steps={self.lr_warmup_steps}: must be >= 0")
        if self.lr_warmup_steps >= self.steps > 0 and self.lr_warmup_steps > 0:
            clamped = self.steps - 1
            note(f"train.lr_warmup_steps={self.lr_warmup_steps} clamped to {clamped} "
                 f"(train.steps={self.steps} is shorter than the warm-up)")
            self.lr_warmup_steps = clamped
        require(self.clip_grad >= 0, f"train.clip_grad={self.clip_grad}: must be >= 0")
        parse_lr_mult(self.lr_mult)
        require(self.eval_interval >= 0, f"train.eval_interval={self.eval_interval}: must be >= 0")

    def num_microbatches(self, dp: int) -> int:
        """Gradient-accumulation steps for ``dp`` data-parallel ranks, or raise naming the mismatch."""
        gbs = self.global_batch_size or self.micro_batch_size * dp
        per_step = self.micro_batch_size * dp
        require(gbs % per_step == 0,
                 f"train.global_batch_size={gbs}: must be divisible by train.micro_batch_size*dp="
                 f"{self.micro_batch_size}*{dp}={per_step}")
        return gbs // per_step


@dataclass
class CheckpointConfig:
    """Sharded, atomically written, resumable checkpoints."""

    dir: Optional[str] = cfg(None, "checkpoint directory (None = <out_dir>/checkpoints)")
    save_interval: int = cfg(0, "steps between checkpoints (0 = only at the end)")
    keep_last: int = cfg(2, "complete checkpoints kept; older ones are deleted")
    resume: bool = cfg(True, "continue from the newest complete checkpoint in checkpoint.dir")
    load: Optional[str] = cfg(None, "initialise weights from this checkpoint (e.g. a pretrained base)")

    def __post_init__(self) -> None:
        require(self.save_interval >= 0, f"checkpoint.save_interval={self.save_interval}: must be >= 0")
        require(self.keep_last >= 1, f"checkpoint.keep_last={self.keep_last}: must be >= 1")


def parse_lr_mult(specs: list[str]) -> list[tuple[str, float]]:
    """``train.lr_mult`` entries ``["linear_proj=0.1", ...]`` -> ``[("linear_proj", 0.1), ...]``; a
    malformed entry is one ConfigError line."""
    rules = []
    for spec in specs:
        pattern, _, mult = spec.rpartition("=")
        require(bool(pattern) and _positive(mult),
                f"train.lr_mult entry {spec!r}: expected SUBSTR=M with M a number > 0")
        rules.append((pattern, float(mult)))
    return rules


def lr_mult_of(name: str, rules: list[tuple[str, float]]) -> Optional[float]:
    """The multiplier of parameter ``name``: the last rule whose pattern it contains, None if none."""
    return next((mult for pattern, mult in reversed(rules) if pattern in name), None)


def _positive(text: str) -> bool:
    """True when ``text`` is a finite number > 0."""
    try:
        return 0 < float(text) < float("inf")
    except ValueError:
        return False
