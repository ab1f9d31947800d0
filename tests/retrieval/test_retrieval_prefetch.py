"""Prefetching loader (order, overlap, wait accounting, errors) and precomputed neighbours."""
import threading
import time

import numpy as np
import pytest

from megatron_retro.errors import UserError
from megatron_retro.retrieval.embedder import HashingEmbedder
from megatron_retro.retrieval.index import IndexFactory
from megatron_retro.retrieval.neighbours import NeighbourSource, SearchNeighbourSource
from megatron_retro.retrieval.prefetch import (PrecomputedNeighbourSource, PrefetchingNeighbourLoader,
                                               precompute_neighbours, tokens_to_chunks)


class SlowSource(NeighbourSource):
    """Deterministic neighbours (a function of the chunk tokens) that take `delay` seconds."""
    k, r, pad_id = 2, 6, 0

    def __init__(self, delay, fail_on=None):
        self.delay, self.fail_on, self.calls = delay, fail_on, []

    def neighbours(self, chunks, doc_ids):
        self.calls.append((time.perf_counter(), threading.current_thread().name))
        time.sleep(self.delay)
        if self.fail_on is not None and (doc_ids == self.fail_on).any():
            raise RuntimeError("shard 0 unavailable")
        base = chunks.sum(axis=2)[:, :, None, None] + doc_ids[:, None, None, None]
        return np.broadcast_to(base, chunks.shape[:2] + (2, 6)).copy()


def _batches(n, bs=2, ns=12):
    rng = np.random.default_rng(0)
    return [{"tokens": rng.integers(1, 50, (bs, ns)), "doc_ids": np.arange(bs) + 10 * i} for i in range(n)]


def test_loader_yields_in_order_and_hides_retrieval_behind_compute():
    batches = _batches(8)
    src = SlowSource(delay=0.05)
    loader = PrefetchingNeighbourLoader(batches, src, tokens_to_chunks(4), depth=3, workers=2)
    seen = []
    for batch, nb in loader:
        time.sleep(0.1)  # the "training step" is slower than retrieval
        seen.append(batch)
        chunks, docs = tokens_to_chunks(4)(batch)
        np.testing.assert_array_equal(nb, SlowSource(0).neighbours(chunks, docs))
    assert seen == batches and loader.steps == 8
    # only the first batch is waited for; afterwards retrieval ran during the steps
    assert loader.wait_seconds < 0.05 + 0.04
    assert all(w < 0.02 for w in loader.waits[1:])
    assert all(name.startswith("neighbours") for _, name in src.calls)


def test_loader_counts_queries_and_runs_one_off_fetches_on_its_worker():
    class Counting(SlowSource):
        queries = 0

        def neighbours(self, chunks, doc_ids):
            self.queries += chunks.shape[0] * chunks.shape[1]
            return super().neighbours(chunks, doc_ids)

    src = Counting(delay=0.0)
    loader = PrefetchingNeighbourLoader(_batches(3), src, tokens_to_chunks(4), depth=2)
    next(loader)
    assert loader.last_queries == 2 * 3  # bs=2 samples x 3 chunks
    assert loader.run(lambda: threading.current_thread().name).startswith("neighbours")
    list(loader)
    assert loader.queries == 3 * 6 and loader.run(lambda: 7) == 7  # closed: runs inline


def test_loader_reports_waits_when_retrieval_is_slower():
    loader = PrefetchingNeighbourLoader(_batches(4), SlowSource(delay=0.1), tokens_to_chunks(4), depth=1)
    for _ in loader:
        pass
    assert loader.wait_seconds > 0.3 and loader.stats()["steps"] == 4


def test_loader_raises_retrieval_errors_in_the_training_thread():
    loader = PrefetchingNeighbourLoader(_batches(3), SlowSource(0.0, fail_on=20), tokens_to_chunks(4))
    next(loader), next(loader)
    with pytest.raises(RuntimeError, match="shard 0 unavailable"):
        next(loader)
    loader.close()


def test_precompute_then_read_back_equals_live_source(store, tokenizer, tmp_path):
    emb = HashingEmbedder(32)
    index = IndexFactory.create("flat", 32)
    index.add(emb.embed(store.texts()), np.arange(len(store)))
    live = SearchNeighbourSource(index, store, emb, tokenizer.decode, k=2)
    m = store.chunk_length
    ids = np.arange(48).reshape(6, 2, 4)  # 6 batches of bs=2 samples of l=4 chunks
    batches = [{"tokens": store.chunks(b).reshape(2, 4 * m), "doc_ids": store.doc_ids(b[:, 0])} for b in ids]
    meta = precompute_neighbours(batches, live, tokens_to_chunks(m), tmp_path / "nb", progress=False)
    assert meta["num_chunks"] <= 48 and meta["batches"] == 6
    pre = PrecomputedNeighbourSource(tmp_path / "nb")
    assert (pre.k, pre.r, pre.pad_id) == (2, store.neighbour_length, store.pad_id)
    for b in batches:
        chunks, docs = tokens_to_chunks(m)(b)
        np.testing.assert_array_equal(pre.neighbours(chunks, docs), live.neighbours(chunks, docs))
    # a chunk that was never precomputed (or the same chunk under another document) is an error
    chunks, docs = tokens_to_chunks(m)(batches[0])
    new_chunk = chunks.copy()
    new_chunk[1, 3, :] = 9999  # tokens the store never had
    with pytest.raises(UserError, match=r"1 of 8 chunks were not precomputed \(first: sample 1, chunk 3\)"):
        pre.neighbours(new_chunk, docs)
    with pytest.raises(UserError, match="4 of 8 chunks were not precomputed"):
        pre.neighbours(chunks, docs + np.array([0, 12345]))  # same tokens, another document
