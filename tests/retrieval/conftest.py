"""Fixtures for retrieval tests: a small topical corpus, a word-level tokenizer, a chunk store."""
from __future__ import annotations

import random
import socket

import numpy as np
import pytest

TOPICS = {
    "astronomy": "star planet orbit comet galaxy telescope moon nebula solar eclipse",
    "cooking": "bread oven flour butter sugar recipe bake dough salt yeast",
    "sailing": "boat wind sail harbour anchor mast crew tide keel rope",
    "music": "violin piano melody chord rhythm concert orchestra tune song note",
    "geology": "rock granite basalt fossil volcano magma quartz erosion layer mineral",
}
FILLER = "the a of and in on with for by to is was".split()


class WordTokenizer:
    """Whitespace tokenizer over a fixed vocabulary; id 0 is padding, 1 is unknown."""

    def __init__(self, words):
        self.itos = ["<pad>", "<unk>"] + sorted(set(words))
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad = 0

    def encode(self, text):
        return [self.stoi.get(w, 1) for w in text.split()]

    def decode(self, ids):
        return " ".join(self.itos[i] for i in ids if i != self.pad)


def make_corpus(num_docs=40, seed=0, min_len=70, max_len=260):
    """[(doc_id, topic, text)]: documents mixing one topic's words with filler words."""
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    docs = []
    for i in range(num_docs):
        topic = topics[i % len(topics)]
        words = TOPICS[topic].split()
        n = rng.randint(min_len, max_len)
        text = " ".join(rng.choice(words) if rng.random() < 0.6 else rng.choice(FILLER) for _ in range(n))
        docs.append((1000 + i, topic, text))
    return docs


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clustered_vectors(n, dim, clusters=20, seed=0):
    """float32[n, dim] unit vectors around random centres (distinct scores, realistic recall)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)
