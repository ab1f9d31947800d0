"""``qa:``: question answering with retrieval (task, passages, prompt layout) for fine-tuning and evaluation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megatron_retro.config.base import cfg, require


@dataclass
class QAConfig:
    """Question answering with retrieval (fine-tuning and evaluation): task, passages, prompt layout.

    GPT reads ``[retrieved passages] Question: q Answer:`` (left-padded to seq_length minus the
    answer budget); RETRO reads ``Question: q Answer:`` in its first chunk and the same passages
    as the neighbours of every chunk.
    """

    task: str = cfg("bundled", "QA task (see `megatron-retro tasks list`)")
    path: Optional[str] = cfg(None, "task file or directory (None = <data.dir>/qa, the bundled benchmark)")
    train_split: str = cfg("train", "split used for fine-tuning")
    eval_split: str = cfg("test", "split scored by `evaluate`")
    train_examples: int = cfg(0, "questions used for fine-tuning (0 = all)")
    eval_examples: int = cfg(0, "questions scored (0 = all)")
    num_passages: int = cfg(2, "k retrieved passages per question (RETRO: equals retro.num_neighbours)")
    passage_length: int = cfg(128, "tokens per passage, the retrieved chunk and its continuation "
                                   "(RETRO: equals retro.neighbour_length)")
    chunk_length: int = cfg(64, "tokens per retrievable chunk of the task corpus")
    max_answer_tokens: int = cfg(16, "answer tokens trained on and generated, end-of-text token included")
    seq_length: Optional[int] = cfg(None, "GPT QA sample length: passages + question + answer (None = "
                                          "model.seq_length); RETRO's is one chunk of question plus the answer")
    embedder: str = cfg("minilm", "embedder of questions and corpus chunks: 'minilm' or 'hash:<dim>'")
    retrieval_dir: Optional[str] = cfg(None, "chunk store + index of the task corpus (None = built under "
                                             "<data.dir> for the bundled task)")
    eval_batch_size: int = cfg(32, "questions generated at once on each data-parallel rank")
    refusal_fraction: float = cfg(0.0, "share of fine-tuning questions turned into negative-rejection samples: "
                                       "k distractor passages, answer 'not in the passages' (bundled task; 0 = off)")

    passages: str = cfg("auto", "where the k passages come from: 'document' = the top-k chunks of the "
                                "example's own document (NarrativeQA, QASPER, QuALITY, QMSum), 'index' = the "
                                "task corpus's retrieval index, 'auto' = document when the task has one")

    def __post_init__(self) -> None:
        require(self.passages in ("auto", "document", "index"),
                 f"qa.passages={self.passages!r}: auto, document or index")
        for name in ("num_passages", "passage_length", "chunk_length", "max_answer_tokens", "eval_batch_size"):
            require(getattr(self, name) >= 1, f"qa.{name}={getattr(self, name)}: must be >= 1")
        require(self.seq_length is None or self.seq_length >= 16, f"qa.seq_length={self.seq_length}: must be >= 16")
        for name in ("train_examples", "eval_examples"):
            require(getattr(self, name) >= 0, f"qa.{name}={getattr(self, name)}: must be >= 0 (0 = all)")
        require(0.0 <= self.refusal_fraction < 1.0,
                 f"qa.refusal_fraction={self.refusal_fraction}: must be in [0, 1)")
        require(self.passage_length >= self.chunk_length,
                 f"qa.passage_length={self.passage_length}: must be >= qa.chunk_length={self.chunk_length}")
