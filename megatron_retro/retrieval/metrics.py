"""Retrieval-quality metrics: Hit@k, Recall@k, MRR and NDCG@k with binary relevance.

``ranked`` is int64[n, K]: the ids a retriever returned per query, best first (-1 = none);
``gold`` is one collection of relevant ids per query.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np


def _check(ranked, gold):
    ranked = np.asarray(ranked)
    gold = [set(int(g) for g in gs) for gs in gold]
    if ranked.ndim != 2 or len(gold) != ranked.shape[0]:
        raise ValueError(f"ranked: shape {ranked.shape}, expected [n, K] with n = len(gold) = {len(gold)}")
    return ranked, gold


def hit_at_k(ranked, gold, k: int) -> float:
    """Share of queries with at least one relevant id in the top k."""
    ranked, gold = _check(ranked, gold)
    return float(np.mean([bool(set(r[:k].tolist()) & g) for r, g in zip(ranked, gold)]))


def recall_at_k(ranked, gold, k: int) -> float:
    """Mean over queries of |top k ∩ relevant| / |relevant| (queries without gold count 0)."""
    ranked, gold = _check(ranked, gold)
    return float(np.mean([len(set(r[:k].tolist()) & g) / len(g) if g else 0.0 for r, g in zip(ranked, gold)]))


def mrr(ranked, gold, k: int | None = None) -> float:
    """Mean reciprocal rank of the first relevant id (0 when none is in the top k)."""
    ranked, gold = _check(ranked, gold)
    total = 0.0
    for r, g in zip(ranked, gold):
        for pos, i in enumerate(r[:k].tolist() if k else r.tolist(), 1):
            if i in g:
                total += 1.0 / pos
                break
    return total / len(gold) if gold else 0.0


def ndcg_at_k(ranked, gold, k: int) -> float:
    """Mean NDCG@k with binary gains: sum 1/log2(pos+1) over hits, over the ideal ordering's."""
    ranked, gold = _check(ranked, gold)
    scores = []
    for r, g in zip(ranked, gold):
        seen, dcg = set(), 0.0
        for pos, i in enumerate(r[:k].tolist(), 1):
            if i in g and i not in seen:
                dcg += 1.0 / math.log2(pos + 1)
                seen.add(i)
        ideal = sum(1.0 / math.log2(pos + 1) for pos in range(1, min(len(g), k) + 1))
        scores.append(dcg / ideal if ideal else 0.0)
    return float(np.mean(scores))


def retrieval_metrics(ranked, gold, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """{'hit@k', 'recall@k', 'ndcg@k' for each k, and 'mrr'}."""
    out = {}
    for k in ks:
        out[f"hit@{k}"] = hit_at_k(ranked, gold, k)
        out[f"recall@{k}"] = recall_at_k(ranked, gold, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, gold, k)
    out["mrr"] = mrr(ranked, gold)
    return out


def evaluate_retriever(search: Callable[[list[str], int], "tuple[np.ndarray, np.ndarray]"],
                       questions: list[str], gold: Iterable[Iterable[int]], ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Run ``search(questions, max(ks)) -> (scores, ids)`` and score it against ``gold``."""
    _, ids = search(list(questions), max(ks))
    return retrieval_metrics(ids, list(gold), ks)
