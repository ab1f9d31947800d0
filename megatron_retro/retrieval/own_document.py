"""Passages from the example's own document: chunk it, retrieve the top-k chunks for the question.

Long-document tasks (NarrativeQA, QASPER, QuALITY, QMSum) come with the text to read; it is far
longer than a tiny model's context, so each question reads only the k chunks of *its own*
document most similar to it — the paper's setting for these tasks (GPT reads them in the prompt,
RETRO as neighbours), without a corpus index.

Notation: a document of T tokens, m chunk length, c = ceil(T / m) chunks, r passage length
(a chunk and its continuation in the same document, pad-filled), k passages, d embedding width.

- chunk i = tokens [i·m, (i+1)·m); passage i = tokens [i·m, i·m + r), pad-filled to r;
- score_i = <embed(question), embed(decode(chunk i))> (unit vectors: cosine similarity);
- the k best passages, best first (GPT's prompt cuts from the lowest ranked); a document of
  fewer than k chunks fills the rest with all-pad passages (the prompt drops pad tokens).

The tokenizer only needs ``encode(text) -> ids`` and ``decode(ids) -> text``; the embedder is
a `retrieval.embedder.Embedder`.  Each distinct document is chunked and embedded once per call.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np


def document_passages(tokens: Sequence[int], m: int, r: int, pad: int) -> Tuple[List[List[int]], np.ndarray]:
    """(chunk token lists [c][<= m], passages int64 [c, r]) of one document (c >= 1)."""
    tokens = list(tokens)
    c = max(1, -(-len(tokens) // m))
    chunks = [tokens[i * m:(i + 1) * m] for i in range(c)]
    passages = np.full((c, r), pad, dtype=np.int64)                 # [c, r]
    for i in range(c):
        span = tokens[i * m:i * m + r]
        passages[i, :len(span)] = span
    return chunks, passages


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first (ties: the earlier chunk first)."""
    order = np.argsort(-scores, kind="stable")
    return order[:k]


class OwnDocumentRetriever:
    """Top-k passages of each question's own document."""

    def __init__(self, tokenizer, embedder, k: int, chunk_length: int, passage_length: int, pad: int):
        self.tokenizer, self.embedder = tokenizer, embedder
        self.k, self.m, self.r, self.pad = k, chunk_length, passage_length, pad
        self._docs: Dict[str, tuple] = {}                           # text -> (vectors [c, d], passages [c, r])

    def _document(self, text: str) -> tuple:
        if text not in self._docs:
            chunks, passages = document_passages(self.tokenizer.encode(text), self.m, self.r, self.pad)
            vectors = self.embedder.embed([self.tokenizer.decode(c) for c in chunks])   # [c, d]
            self._docs[text] = (vectors, passages)
        return self._docs[text]

    def retrieve(self, questions: Sequence[str], documents: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """(passages int64 [n, k, r], chunk indices int64 [n, k]; -1 where the document had fewer)."""
        n = len(questions)
        out = np.full((n, self.k, self.r), self.pad, dtype=np.int64)   # [n, k, r]
        picked = np.full((n, self.k), -1, dtype=np.int64)              # [n, k]
        q = self.embedder.embed(list(questions)) if n else np.zeros((0, 1), np.float32)   # [n, d]
        for i, doc in enumerate(documents):
            vectors, passages = self._document(doc)
            best = top_k(vectors @ q[i], self.k)                       # [<= k]
            out[i, :len(best)] = passages[best]
            picked[i, :len(best)] = best
        return out, picked
