"""Fixtures for retrieval tests: a small topical corpus, a word-level tokenizer, a chunk store."""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning faiss threads
# make k-means (IVF/PQ/OPQ training) several times slower.  Read when faiss first loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from retrieval_testlib import WordTokenizer, make_corpus  # noqa: E402


@pytest.fixture(scope="session")
def corpus():
    return make_corpus()


@pytest.fixture(scope="session")
def tokenizer(corpus):
    return WordTokenizer(w for _, _, t in corpus for w in t.split())


@pytest.fixture(scope="session")
def store(corpus, tokenizer, tmp_path_factory):
    from megatron_retro.retrieval.chunk_store import build_chunk_store

    out = tmp_path_factory.mktemp("store") / "chunks"
    docs = [(doc_id, tokenizer.encode(text)) for doc_id, _, text in corpus]
    return build_chunk_store(docs, out, tokenizer.decode, chunk_length=16, neighbour_length=32,
                             pad_id=tokenizer.pad)
