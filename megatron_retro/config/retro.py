"""``retro:``: RETRO's chunks, neighbours, encoder and retrieval layers (read when model.arch=retro)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megatron_retro.config.base import cfg, require


@dataclass
class RetroConfig:
    """RETRO: chunked cross-attention to retrieved neighbours (read when model.arch=retro)."""

    chunk_length: int = cfg(64, "retro.chunk_length m: tokens per chunk (seq_length must be a multiple)")
    num_neighbours: int = cfg(2, "retro.num_neighbours k: neighbours retrieved per chunk")
    neighbour_length: int = cfg(128, "retro.neighbour_length r: tokens per neighbour (chunk + continuation)")
    retrieval_layers: Optional[list[int]] = cfg(
        None, "1-based decoder layers with chunked cross-attention (None = every 3rd from 6, from 9 "
              "when num_layers > 15); the first one also runs the encoder")
    encoder_num_layers: int = cfg(2, "layers of the bidirectional neighbour encoder")
    encoder_hidden_dropout: float = cfg(0.0, "dropout on the encoder's residual branches")
    encoder_attention_dropout: float = cfg(0.0, "dropout on the encoder's attention probabilities")
    attention_gate: bool = cfg(False, "scale each chunked cross-attention output by tanh(g), g a learned "
                                      "scalar starting at 0 (a RETRO from a GPT starts equal to the GPT)")
    retrieval_dir: Optional[str] = cfg(None, "retrieval index + chunk store directory for pretraining "
                                             "(None = <data.dir>/retro_index, built on first use)")
    embedder: str = cfg("minilm", "retrieval embedder: 'minilm' (all-MiniLM-L6-v2) or 'hash:<dim>'")
    exclude_same_doc: bool = cfg(True, "drop neighbours from the sample's own document (RETRO pretraining rule)")
    megatron_compat: bool = cfg(False, "the architecture of megatron-core 0.15's RetroModel (for its checkpoints, "
                                       "see `retro import-mcore` and docs/megatron-retro-compat.md); TP only")

    def __post_init__(self) -> None:
        for name in ("chunk_length", "num_neighbours", "neighbour_length", "encoder_num_layers"):
            require(getattr(self, name) >= 1, f"retro.{name}={getattr(self, name)}: must be >= 1")
        require(self.neighbour_length >= self.chunk_length,
                 f"retro.neighbour_length={self.neighbour_length}: must be >= retro.chunk_length="
                 f"{self.chunk_length} (a neighbour is its chunk plus a continuation)")
        for name in ("encoder_hidden_dropout", "encoder_attention_dropout"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"retro.{name}={value}: must be in [0, 1)")
        if self.retrieval_layers is not None:
            require(len(self.retrieval_layers) >= 1, "retro.retrieval_layers: must name at least one layer")
            require(len(set(self.retrieval_layers)) == len(self.retrieval_layers),
                     f"retro.retrieval_layers={self.retrieval_layers}: duplicates")
        if self.megatron_compat:
            require(not self.attention_gate, "retro.attention_gate: megatron-core 0.15 RETRO has no gate; "
                                              "turn it off with retro.megatron_compat=true")
            require(self.retrieval_layers is None, "retro.retrieval_layers: megatron-core 0.15 RETRO places them "
                                                    "itself (every 3rd from 6, or 9); leave unset with megatron_compat")

    def layer_numbers(self, num_layers: int) -> list[int]:
        """1-based decoder layers holding chunked cross-attention, ascending."""
        if self.retrieval_layers is not None:
            return sorted(self.retrieval_layers)
        return list(range(6 if num_layers <= 15 else 9, num_layers + 1, 3))
