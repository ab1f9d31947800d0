"""``data:``: where the training text and the tokenizer come from (bundled corpus or indexed dataset)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from megatron_retro.config.base import cfg, require


@dataclass
class DataConfig:
    """Where the training text and tokenizer come from."""

    source: Literal["bundled", "indexed"] = cfg(
        "bundled", "'bundled' = generate the synthetic encyclopedia; 'indexed' = use data.prefix")
    dir: str = cfg("data/bundled", "directory of the prepared data (corpus, tokenizer, indexed dataset)")
    prefix: Optional[str] = cfg(None, "megatron indexed-dataset prefix (.bin/.idx) for source=indexed")
    tokenizer: Optional[str] = cfg(None, "tokenizer model file (None = <data.dir>/tokenizer.model)")
    num_entities: int = cfg(1500, "entities in the generated encyclopedia (bundled source)")
    vocab_size: int = cfg(4096, "vocabulary of the tokenizer trained on the bundled corpus")
    seed: int = cfg(1234, "seed of the corpus generator and the sample shuffling")
    split: str = cfg("98,2,0", "train,valid,test weights of the document split")
    reading_docs: int = cfg(0, "bundled source: up to this many reading-practice documents (facts of an entity of a "
                               "separate fictional world, then questions on them answered from that passage) "
                               "added to the training text; 0 = none")
    copy_share: float = cfg(0.0, "GPT pretraining: share of each batch's samples replaced by synthetic copy sequences "
                                 "(random ordinary pieces, a span said 2-4 times; teaches copying from the "
                                 "context, data/copy_mix.py); 0 = none")
    copy_max_span: int = cfg(48, "longest span (tokens) of a synthetic copy sequence (shortest: 4)")
    copy_vocab: int = cfg(0, "synthetic copy sequences draw from the first N ordinary pieces (by id: the most "
                             "frequent merges); 0 = every ordinary piece")

    def __post_init__(self) -> None:
        require(self.source != "indexed" or bool(self.prefix),
                 "data.prefix: required when data.source=indexed")
        require(self.num_entities >= 10, f"data.num_entities={self.num_entities}: must be >= 10")
        require(self.vocab_size >= 64, f"data.vocab_size={self.vocab_size}: must be >= 64")
        require(self.reading_docs >= 0, f"data.reading_docs={self.reading_docs}: must be >= 0")
        require(0.0 <= self.copy_share < 1.0, f"data.copy_share={self.copy_share}: must be in [0, 1)")
        require(self.copy_max_span >= 4, f"data.copy_max_span={self.copy_max_span}: must be >= 4")
        require(self.copy_vocab == 0 or self.copy_vocab >= 16, f"data.copy_vocab={self.copy_vocab}: 0 or >= 16")
        parts = self.split.split(",")
        ok = len(parts) == 3 and all(p.strip().replace(".", "", 1).isdigit() for p in parts)
        require(ok and sum(float(p) for p in parts) > 0,
                 f"data.split={self.split!r}: must be three non-negative weights 'train,valid,test'")
