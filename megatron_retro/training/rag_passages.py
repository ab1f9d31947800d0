"""Passages of the RAG ability splits, cut from the task corpus's chunk store, and refusal teaching.

Notation: n questions, k passages, r passage length (chunk + continuation, as retrieved).

``PassageCutter.cut(spec)`` turns a ``data.synthetic.rag_splits.PassageSpec`` into the r tokens a model
reads: the first window (chunk + continuation, in chunk order) of the spec's document whose
decoded text contains one phrase of every needle group (whole words); failing that, the first
window with the first group; a spec without needles takes the document's first window; an
empty slot (doc -1) is all pad, like a missing retrieval result.  The window's own store
tokens are used, so a specified passage is byte-identical to what retrieval would hand over;
only a counterfactual passage (``replace``) is decoded, edited and re-encoded (cut / padded
to r).  ``cut_items`` does it for whole splits and drops (and counts) the items whose answer
is in no window.

``teach_refusal`` (``qa.refusal_fraction > 0``, bundled task only) turns a seeded share of the
fine-tuning questions into negative-rejection samples: their passages become k distractors
(``rag_splits.RagCorpus.distractors``) and their answer ``rag_splits.REFUSAL``.  Off by default.
"""
from __future__ import annotations

import os
import random
from typing import List, Optional, Sequence, Tuple

import numpy as np

from megatron_retro.data.synthetic.qa import contains_words
from megatron_retro.data.synthetic.rag_splits import REFUSAL, PassageSpec, RagItem
from megatron_retro.errors import UserError


class PassageCutter:
    """Cuts specified passages from a ``ChunkStore`` with the corpus tokenizer."""

    def __init__(self, store, tokenizer):
        from megatron_retro.retrieval.qa_retrieval import chunks_by_doc

        self.store, self.tokenizer = store, tokenizer
        self.by_doc = chunks_by_doc(store)
        self._texts: dict = {}

    def window_text(self, chunk_id: int) -> str:
        """Decoded text of a chunk and its continuation (pad dropped)."""
        if chunk_id not in self._texts:
            tokens = self.store.neighbours(np.array([chunk_id]))[0]                 # [r]
            self._texts[chunk_id] = self.tokenizer.decode([int(t) for t in tokens if t != self.store.pad_id])
        return self._texts[chunk_id]

    def texts(self, chunk_ids: np.ndarray) -> List[List[str]]:
        """Window texts of int64[n, k] chunk ids ("" for -1)."""
        return [[self.window_text(int(c)) if c >= 0 else "" for c in row] for row in np.asarray(chunk_ids)]

    def _has(self, text: str, group: Sequence[str]) -> bool:
        return any(contains_words(text, p) for p in group)

    def find(self, spec: PassageSpec) -> Optional[int]:
        """Chunk id of the window the spec names, or None when no window holds its first needle group."""
        chunks = [int(c) for c in self.by_doc.get(spec.doc_id, ())]
        if not chunks:
            return None
        if not spec.needles:
            return chunks[0]
        for wanted in (spec.needles, spec.needles[:1]):
            for c in chunks:
                if all(self._has(self.window_text(c), g) for g in wanted):
                    return c
        return None

    def cut(self, spec: PassageSpec) -> Optional[Tuple[np.ndarray, str, int]]:
        """(tokens int64[r], text, doc id) of one passage; None when it cannot be cut."""
        r, pad = self.store.neighbour_length, self.store.pad_id
        if spec.doc_id < 0:
            return np.full(r, pad, np.int64), "", -1
        c = self.find(spec)
        if c is None:
            return None
        text = self.window_text(c)
        if spec.replace is None:
            return self.store.neighbours(np.array([c]))[0].astype(np.int64), text, spec.doc_id
        old, new = spec.replace
        edited = text.replace(old, new)
        if edited == text or contains_words(edited, old):
            return None
        ids = self.tokenizer.encode(edited)[:r]
        tokens = np.full(r, pad, np.int64)
        tokens[:len(ids)] = ids
        return tokens, self.tokenizer.decode(ids), spec.doc_id


def cut_items(items: Sequence[RagItem], cutter: PassageCutter):
    """(kept items, passages int64[n, k, r], texts [n][k], doc ids int64[n, k], dropped count)."""
    kept, tokens, texts, docs = [], [], [], []
    for item in items:
        cut = [cutter.cut(p) for p in item.passages]
        if any(c is None for c in cut):
            continue
        kept.append(item)
        tokens.append(np.stack([c[0] for c in cut]))
        texts.append([c[1] for c in cut])
        docs.append([c[2] for c in cut])
    r = cutter.store.neighbour_length
    k = len(items[0].passages) if items else 0
    passages = np.stack(tokens) if tokens else np.zeros((0, k, r), np.int64)
    return kept, passages, texts, np.asarray(docs, np.int64).reshape(len(kept), k), len(items) - len(kept)


def teach_refusal(cfg, qa, split, fraction: float, seed: int):
    """A copy of a fine-tuning ``QASplit`` whose seeded ``fraction`` of questions read k distractors
    and answer ``REFUSAL`` (bundled task only: needs each question's entity, relation, gold docs)."""
    import dataclasses

    from megatron_retro.data.synthetic.encyclopedia import generate
    from megatron_retro.data.synthetic.rag_splits import RagCorpus
    from megatron_retro.retrieval.chunk_store import ChunkStore

    if cfg.qa.task != "bundled":
        raise UserError(f"qa.refusal_fraction={fraction}: refusal teaching needs the bundled task "
                        f"(qa.task={cfg.qa.task})")
    params = qa.data.params
    corpus = RagCorpus(generate(params["num_entities"], params["seed"], params["split"]))
    cutter = PassageCutter(ChunkStore(os.path.join(qa.db_dir, "store")), qa.tokenizer)
    k = split.passages.shape[1]
    rng = random.Random(f"{seed}:refusal")
    examples, passages, changed = list(split.examples), split.passages.copy(), 0
    for i, ex in enumerate(examples):
        if rng.random() >= fraction:
            continue
        m = ex.meta
        specs = corpus.distractors(m["entity"], m["relation"], m["gold_doc_ids"], ex.answers, k,
                                   random.Random(f"{seed}:refusal:{ex.id}"))
        cut = [cutter.cut(s) for s in specs]
        if len(specs) < k or any(c is None for c in cut):
            continue
        passages[i] = np.stack([c[0] for c in cut])
        examples[i] = dataclasses.replace(ex, answers=[REFUSAL])
        changed += 1
    out = dataclasses.replace(split, examples=examples, passages=passages)
    return out, changed
