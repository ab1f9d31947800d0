"""Retrieval-quality metrics against hand-computed values; BM25, RRF fusion, re-ranking hook."""
import math

import numpy as np
import pytest

from megatron_retro.retrieval.embedder import HashingEmbedder
from megatron_retro.retrieval.hybrid import (BM25Retriever, DenseRetriever, EmbeddingReranker, HybridRetriever,
                                             RerankedRetriever, reciprocal_rank_fusion)
from megatron_retro.retrieval.index import IndexFactory
from megatron_retro.retrieval.metrics import evaluate_retriever, hit_at_k, mrr, ndcg_at_k, recall_at_k


def test_metrics_hand_computed():
    ranked = np.array([[5, 1, 9], [2, 3, 4], [7, -1, -1]])
    gold = [{1, 9}, {8}, {7}]
    assert hit_at_k(ranked, gold, 1) == pytest.approx(1 / 3)
    assert hit_at_k(ranked, gold, 2) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, gold, 2) == pytest.approx((0.5 + 0 + 1) / 3)
    assert mrr(ranked, gold) == pytest.approx((1 / 2 + 0 + 1) / 3)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranked, gold, 3) == pytest.approx(((1 / math.log2(3) + 1 / 2) / ideal + 0 + 1) / 3)


def test_rrf_fuses_by_reciprocal_rank():
    a = np.array([[1, 2, 3]])
    b = np.array([[3, 1, -1]])
    s, i = reciprocal_rank_fusion([a, b], 3, c=1.0)
    # 1: 1/2 + 1/3; 3: 1/4 + 1/2; 2: 1/3
    np.testing.assert_array_equal(i, [[1, 3, 2]])
    np.testing.assert_allclose(s, [[1 / 2 + 1 / 3, 1 / 4 + 1 / 2, 1 / 3]], rtol=1e-6)


def test_bm25_dense_hybrid_and_rerank_find_topical_chunks(store, corpus):
    topic_of = {doc_id: topic for doc_id, topic, _ in corpus}
    emb = HashingEmbedder(64)
    index = IndexFactory.create("flat", 64)
    index.add(emb.embed(store.texts()), np.arange(len(store)))
    bm25 = BM25Retriever.from_store(store)
    dense = DenseRetriever(emb, index)
    hybrid = HybridRetriever([dense, bm25], depth=20)
    reranked = RerankedRetriever(bm25, EmbeddingReranker(emb, store), candidates=10)
    questions = ["violin piano concert", "granite volcano magma", "comet telescope orbit"]
    topics = ["music", "geology", "astronomy"]
    gold = [[c for c in range(len(store)) if topic_of[int(store.doc_ids(c))] == t] for t in topics]
    for retriever in (bm25, dense, hybrid, reranked):
        m = evaluate_retriever(retriever.search, questions, gold, ks=(1, 5))
        assert m["hit@1"] == 1.0 and m["recall@5"] > 0 and m["mrr"] == 1.0, (type(retriever).__name__, m)
    s, i = bm25.search(["zzzz unknownword"], 3)
    assert (i == -1).all() and np.isneginf(s).all()
    # the re-ranker's order is the embedder's cosine order over BM25's candidates
    _, cand = bm25.search(questions[:1], 10)
    _, got = reranked.search(questions[:1], 10)
    cos = emb.embed([store.text(int(c)) for c in got[0]]) @ emb.embed(questions[:1])[0]
    assert set(got[0]) == set(cand[0]) and (np.diff(cos) <= 1e-6).all()
