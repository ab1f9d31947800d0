"""``RunConfig``: every section of one run, and the checks that span sections (TP vs heads, PP vs
layers, RETRO chunks vs sequence length)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from megatron_retro.config.base import cfg, require
from megatron_retro.config.data import DataConfig
from megatron_retro.config.model import ModelConfig
from megatron_retro.config.parallel import ParallelConfig
from megatron_retro.config.qa import QAConfig
from megatron_retro.config.retrieval import RetrievalConfig
from megatron_retro.config.retro import RetroConfig
from megatron_retro.config.train import CheckpointConfig, TrainConfig


@dataclass
class RunConfig:
    """Everything one run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    retro: RetroConfig = field(default_factory=RetroConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    out_dir: str = cfg("runs/default", "directory for metrics, plots and (by default) checkpoints")

    def __post_init__(self) -> None:
        require(self.parallel.pp <= self.model.num_layers,
                 f"parallel.pp={self.parallel.pp}: must be <= model.num_layers={self.model.num_layers}")
        chunks = self.parallel.pp * (self.parallel.vpp or 1)
        require(self.model.num_layers % chunks == 0,
                 f"model.num_layers={self.model.num_layers}: must be divisible by "
                 f"parallel.pp*vpp={chunks}")
        require(self.model.num_attention_heads % self.parallel.tp == 0,
                 f"model.num_attention_heads={self.model.num_attention_heads}: must be divisible "
                 f"by parallel.tp={self.parallel.tp}")
        groups = self.model.num_query_groups or self.model.num_attention_heads
        # fewer KV heads than TP ranks (Gemma 3: one): megatron-core splits the fused QKV rows over
        # the ranks and all-gathers its output, so each KV head's gradient is summed exactly
        require(groups % self.parallel.tp == 0 or self.parallel.tp % groups == 0,
                 f"model.num_query_groups={groups}: must be a multiple or a divisor of parallel.tp={self.parallel.tp}")
        require(self.model.ffn_size % self.parallel.tp == 0,
                 f"model.ffn_hidden_size={self.model.ffn_size}: must be divisible by parallel.tp={self.parallel.tp}")
        if self.parallel.sequence_parallel:
            require(self.model.seq_length % self.parallel.tp == 0,
                     f"model.seq_length={self.model.seq_length}: must be divisible by parallel.tp="
                     f"{self.parallel.tp} with sequence parallelism")
        if self.model.arch == "retro":
            self._check_retro()

    def _check_retro(self) -> None:
        retro, model, tp = self.retro, self.model, self.parallel.tp
        require(model.seq_length % retro.chunk_length == 0,
                 f"model.seq_length={model.seq_length}: must be a multiple of retro.chunk_length={retro.chunk_length}")
        layers = retro.layer_numbers(model.num_layers)
        require(len(layers) >= 1, f"retro.retrieval_layers: none with model.num_layers={model.num_layers} "
                                   f"(the default starts at layer 6); set retro.retrieval_layers")
        require(all(1 <= n <= model.num_layers for n in layers),
                 f"retro.retrieval_layers={layers}: must be in [1, model.num_layers={model.num_layers}]")
        if self.parallel.sequence_parallel:
            for name in ("chunk_length", "neighbour_length"):
                require(getattr(retro, name) % tp == 0,
                         f"retro.{name}={getattr(retro, name)}: must be divisible by parallel.tp={tp} "
                         f"with sequence parallelism")

    @property
    def checkpoint_dir(self) -> str:
        return self.checkpoint.dir or os.path.join(self.out_dir, "checkpoints")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
