"""``parallel:``: how the model is split (TP, PP, virtual PP, sequence parallelism, backend)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from megatron_retro.config.base import cfg, require


@dataclass
class ParallelConfig:
    """How the model is split; data parallel size is whatever the world size leaves."""

    tp: int = cfg(1, "tensor model parallel size")
    pp: int = cfg(1, "pipeline model parallel size")
    vpp: Optional[int] = cfg(None, "virtual pipeline chunks per stage (interleaved 1F1B); None = off")
    sequence_parallel: bool = cfg(False, "shard norm/dropout activations along the sequence (needs tp > 1)")
    backend: Literal["auto", "nccl", "gloo"] = cfg("auto", "collective backend: auto = nccl with CUDA else gloo")

    def __post_init__(self) -> None:
        for name in ("tp", "pp"):
            require(getattr(self, name) >= 1, f"parallel.{name}={getattr(self, name)}: must be >= 1")
        if self.vpp is not None:
            require(self.vpp >= 2 and self.pp >= 2,
                     f"parallel.vpp={self.vpp}: needs vpp >= 2 and parallel.pp >= 2 (pp={self.pp})")
        require(not self.sequence_parallel or self.tp > 1,
                 f"parallel.sequence_parallel=true: needs parallel.tp > 1 (tp={self.tp})")

    def check_world(self, world_size: int) -> int:
        """Return the data-parallel size for ``world_size`` ranks, or raise naming the mismatch."""
        mp = self.tp * self.pp
        require(world_size % mp == 0,
                 f"world size {world_size} is not divisible by parallel.tp*parallel.pp={self.tp}*{self.pp}={mp}")
        return world_size // mp
