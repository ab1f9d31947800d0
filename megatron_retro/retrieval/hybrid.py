"""Text retrievers for QA prompts: dense, BM25 (bm25s), their reciprocal-rank fusion, re-ranking.

Notation: ``n`` queries, ``k`` results.  Every retriever has
``search(texts: list[str], k) -> (scores float32[n, k], ids int64[n, k])``, best first, id -1
where nothing matched; ids are chunk ids of one chunk store.

Reciprocal rank fusion (Cormack et al. 2009): ``score(d) = sum_r w_r / (c + rank_r(d))`` over
the retrievers that returned ``d`` (rank from 1), ``c = 60`` by default.

A re-ranker is any callable ``(texts, candidate_ids int64[n, c]) -> float[n, c]`` (higher =
better); ``RerankedRetriever`` takes the top ``c`` of a retriever and re-orders them.
``EmbeddingReranker`` re-scores candidates by cosine similarity under an embedder (e.g. BM25
candidates re-ranked by MiniLM), ``BM25Retriever.score`` by their BM25 score (dense candidates
re-ranked lexically), ``CrossEncoderReranker`` with a sentence-transformers cross-encoder.
Ties in the re-ranker's scores keep the base retriever's order.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from megatron_retro.errors import UserError


class DenseRetriever:
    """Embed query texts and search an ``Index`` (or the sharded service client)."""

    def __init__(self, embedder, searcher):
        self.embedder, self.searcher = embedder, searcher

    def search(self, texts: list[str], k: int):
        return self.searcher.search(self.embedder.embed(list(texts)), k)


class BM25Retriever:
    """Lexical BM25 over the chunk texts of a store (bm25s, English stop words removed)."""

    def __init__(self, texts: Sequence[str], stopwords: str = "en"):
        import bm25s

        self._bm25s = bm25s
        self.stopwords = stopwords
        self.ntotal = len(texts)
        self.model = bm25s.BM25()
        self.model.index(bm25s.tokenize(list(texts), stopwords=stopwords, show_progress=False),
                         show_progress=False)

    @classmethod
    def from_store(cls, store, **kwargs) -> "BM25Retriever":
        return cls(store.texts(), **kwargs)

    def search(self, texts: list[str], k: int):
        n = len(texts)
        kk = min(k, self.ntotal)
        scores = np.full((n, k), -np.inf, np.float32)
        ids = np.full((n, k), -1, np.int64)
        if n == 0 or kk == 0:
            return scores, ids
        tokens = self._bm25s.tokenize(list(texts), stopwords=self.stopwords, return_ids=False, show_progress=False)
        got, sc = self.model.retrieve(tokens, k=kk, show_progress=False)  # [n, kk] each
        matched = sc > 0  # bm25s pads with zero-score documents
        ids[:, :kk] = np.where(matched, got, -1)
        scores[:, :kk] = np.where(matched, sc, -np.inf)
        return scores, ids

    def score(self, texts: list, candidates: np.ndarray) -> np.ndarray:
        """float32[n, c]: BM25 score of each candidate chunk for its query (a re-ranker; -inf for id -1)."""
        candidates = np.asarray(candidates, dtype=np.int64)
        out = np.full(candidates.shape, -np.inf, np.float32)
        tokens = self._bm25s.tokenize(list(texts), stopwords=self.stopwords, return_ids=False, show_progress=False)
        for q, words in enumerate(tokens):
            ok = candidates[q] >= 0
            if words and ok.any():
                out[q, ok] = self.model.get_scores(list(words))[candidates[q, ok]]
            elif ok.any():
                out[q, ok] = 0.0
        return out


def reciprocal_rank_fusion(id_lists: Sequence[np.ndarray], k: int, c: float = 60.0,
                           weights: Optional[Sequence[float]] = None):
    """Fuse ranked lists int64[n, k_i] into (scores float32[n, k], ids int64[n, k]); ties: smaller id."""
    if not id_lists:
        raise UserError("reciprocal_rank_fusion: need at least one ranked list")
    weights = list(weights) if weights is not None else [1.0] * len(id_lists)
    n = id_lists[0].shape[0]
    out_s = np.full((n, k), -np.inf, np.float32)
    out_i = np.full((n, k), -1, np.int64)
    for q in range(n):
        fused: dict[int, float] = {}
        for w, ids in zip(weights, id_lists):
            for rank, i in enumerate(ids[q].tolist(), 1):
                if i >= 0:
                    fused[i] = fused.get(i, 0.0) + w / (c + rank)
        best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        for j, (i, s) in enumerate(best):
            out_i[q, j], out_s[q, j] = i, s
    return out_s, out_i


class HybridRetriever:
    """Dense + BM25 (or any retrievers), each asked for ``depth`` results, fused by RRF."""

    def __init__(self, retrievers: Sequence, depth: int = 50, c: float = 60.0,
                 weights: Optional[Sequence[float]] = None):
        self.retrievers, self.depth, self.c, self.weights = list(retrievers), depth, c, weights

    def search(self, texts: list[str], k: int):
        lists = [r.search(texts, max(k, self.depth))[1] for r in self.retrievers]
        return reciprocal_rank_fusion(lists, k, self.c, self.weights)


Reranker = Callable[[list, np.ndarray], np.ndarray]


class EmbeddingReranker:
    """Scores candidates by cosine similarity of query and chunk text under ``embedder``."""

    def __init__(self, embedder, store):
        self.embedder, self.store = embedder, store

    def __call__(self, texts: list, candidates: np.ndarray) -> np.ndarray:
        q = self.embedder.embed(list(texts))                                   # [n, d]
        flat = candidates.reshape(-1)
        docs = self.embedder.embed([self.store.text(int(i)) if i >= 0 else "" for i in flat])
        docs = docs.reshape(candidates.shape + (-1,))                          # [n, c, d]
        scores = np.einsum("nd,ncd->nc", q, docs)
        return np.where(candidates >= 0, scores, -np.inf)


class CrossEncoderReranker:
    """Scores (query, chunk text) pairs with a sentence-transformers ``CrossEncoder`` (on CUDA when present)."""

    def __init__(self, model: str, store, batch_size: int = 64, device: Optional[str] = None):
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(model, device=device)
        self.store, self.batch_size = store, batch_size

    def __call__(self, texts: list, candidates: np.ndarray) -> np.ndarray:
        candidates = np.asarray(candidates, dtype=np.int64)                    # [n, c]
        q, c = np.nonzero(candidates >= 0)
        out = np.full(candidates.shape, -np.inf, np.float32)
        if len(q):
            pairs = [(texts[i], self.store.text(int(candidates[i, j]))) for i, j in zip(q, c)]
            out[q, c] = np.asarray(self.model.predict(pairs, batch_size=self.batch_size,
                                                      show_progress_bar=False), np.float32).reshape(-1)
        return out


class RerankedRetriever:
    """Top ``candidates`` of ``base``, re-ordered by ``reranker`` scores."""

    def __init__(self, base, reranker: Reranker, candidates: int = 20):
        self.base, self.reranker, self.candidates = base, reranker, candidates

    def search(self, texts: list[str], k: int):
        _, cand = self.base.search(texts, max(k, self.candidates))             # [n, c]
        scores = np.asarray(self.reranker(list(texts), cand), dtype=np.float32)
        if scores.shape != cand.shape:
            raise UserError(f"reranker returned shape {scores.shape}, expected {cand.shape}")
        order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]             # ties keep the base order
        return np.take_along_axis(scores, order, 1), np.take_along_axis(cand, order, 1)
