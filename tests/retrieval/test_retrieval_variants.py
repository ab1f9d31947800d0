"""Small-to-big and multi-query fusion retrievers against slow references (`index eval-qa` runs them in
test_retrieval_qa_retrieval.py)."""
import numpy as np

from megatron_retro.retrieval.embedder import HashingEmbedder
from megatron_retro.retrieval.variants import (MultiQueryRetriever, SmallToBigRetriever, reformulations,
                                               sentence_units)


class TextStore:
    def __init__(self, texts):
        self._texts = texts

    def __len__(self):
        return len(self._texts)

    def text(self, i):
        return self._texts[i]


CHUNKS = ["Anna Vell was born in Tarvenholm. She painted the harbour. Her teacher was Orm Kelt.",
          "Tarvenholm lies on the Ossel River. It has 12,400 people.",
          "Orm Kelt was born in Brimwick in 1701. He wrote poems about the sea.",
          "The Ossel River rises on Mount Vrouth. It is 412 kilometres long."]


def test_reformulations_are_rule_based_rewrites():
    assert reformulations("Where was Anna Vell born?") == ["Where was Anna Vell born?", "Anna Vell was born in",
                                                          "Anna Vell born", "Anna Vell"]
    assert reformulations("Nirtelport lies in which country?")[0] == "Nirtelport lies in which country?"
    assert len(set(map(str.lower, reformulations("Who founded the Ziststikgres Institute?")))) == 4


def test_small_to_big_equals_a_brute_force_reference():
    emb = HashingEmbedder(64)
    store = TextStore(CHUNKS)
    r = SmallToBigRetriever(emb, store, depth=100)
    queries = ["Where was Orm Kelt born?", "How long is the Ossel River?", "Who taught Anna Vell?"]
    scores, ids = r.search(queries, 3)
    units = [(c, u) for c in range(len(CHUNKS)) for u in sentence_units(CHUNKS[c])]
    assert r.num_units == len(units) == 9
    vec = emb.embed([u for _, u in units])
    for q, row, srow in zip(queries, ids, scores):
        sims = vec @ emb.embed([q])[0]
        best = {}                                            # a chunk's score is its best unit's
        for (c, _), s in zip(units, sims):
            best[c] = max(best.get(c, -np.inf), float(s))
        assert len(set(row.tolist())) == 3                   # no repeats
        np.testing.assert_allclose(srow, [best[c] for c in row], atol=1e-5)
        np.testing.assert_allclose(srow, sorted(best.values(), reverse=True)[:3], atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_multi_query_fuses_the_rewrites_by_reciprocal_rank():
    class Fixed:
        def __init__(self):
            self.seen = []

        def search(self, texts, k):
            self.seen += list(texts)
            table = {0: [1, 2, 3], 1: [2, 1, 4], 2: [2, 5, 1], 3: [5, 2, 1]}
            ids = np.array([table[len(t) % 4] + [-1] * (k - 3) for t in texts], np.int64)
            return np.zeros(ids.shape, np.float32), ids

    base = Fixed()
    q = "Where was Anna Vell born?"
    _, ids = MultiQueryRetriever(base, depth=3).search([q], 3)
    variants = reformulations(q)
    assert base.seen == variants
    fused = {}
    for t in variants:
        for rank, i in enumerate({0: [1, 2, 3], 1: [2, 1, 4], 2: [2, 5, 1], 3: [5, 2, 1]}[len(t) % 4], 1):
            fused[i] = fused.get(i, 0) + 1 / (60 + rank)
    assert ids[0].tolist() == sorted(fused, key=lambda i: (-fused[i], i))[:3]
