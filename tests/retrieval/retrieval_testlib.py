"""Test helpers for retrieval tests: a small topical corpus, a word-level tokenizer, vectors."""
from __future__ import annotations

import random

import numpy as np

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


def clustered_vectors(n, dim, clusters=20, seed=0):
    """float32[n, dim] unit vectors around random centres (distinct scores, realistic recall)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def assert_same_index(single_dir, parallel_dir, store, dim=32, nprobe=8):
    """The parallel build's shards hold the same ids and give the same search results as ``single_dir``."""
    from megatron_retro.retrieval.build import ShardedLocalIndex
    from megatron_retro.retrieval.embedder import HashingEmbedder
    from megatron_retro.retrieval.sharding import load_manifest

    a, b = ShardedLocalIndex(str(single_dir), nprobe=nprobe), ShardedLocalIndex(str(parallel_dir), nprobe=nprobe)
    assert [s.ntotal for s in a.shards] == [s.ntotal for s in b.shards]
    n = len(a.shards)
    for i in range(n):  # same trained quantizers, same vectors under the same ids: identical files
        name = f"shard-{i:05d}-of-{n:05d}.faiss"
        assert (single_dir / name).read_bytes() == (parallel_dir / name).read_bytes(), name
    q = HashingEmbedder(dim).embed(store.texts(0, 40))
    sa, ia = a.search(q, 4)
    sb, ib = b.search(q, 4)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(sa, sb)
    manifest = load_manifest(parallel_dir)
    assert manifest["num_shards"] == len(a.shards) and not (parallel_dir / "trained-empty.faiss").exists()
    assert load_manifest(single_dir)["bounds"] == manifest["bounds"]
