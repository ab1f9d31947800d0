"""Embedders: the real all-MiniLM-L6-v2 (offline) and the deterministic hashing embedder."""
import numpy as np
import pytest

from megatron_retro.errors import UserError
from megatron_retro.retrieval.embedder import HashingEmbedder, build_embedder, embed_chunk_store


@pytest.fixture(scope="module")
def minilm():
    return build_embedder("minilm")


def test_real_minilm_embeds_semantically(minilm):
    assert minilm.dim == 384
    x = minilm.embed(["The cat sat on the mat.", "A kitten is sitting on a rug.",
                      "Stock markets fell sharply on Monday."], batch_size=2)
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-4)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2
    # batching does not change the result
    np.testing.assert_allclose(minilm.embed(["The cat sat on the mat."]), x[:1], atol=1e-5)


def test_embed_chunk_store_writes_all_rows(store, tmp_path):
    emb = HashingEmbedder(32)
    out = embed_chunk_store(store, emb, tmp_path / "e.npy", batch_size=8, progress=False)
    assert out.shape == (len(store), 32)
    np.testing.assert_array_equal(out[5], emb.embed([store.text(5)])[0])
    assert [p.name for p in tmp_path.iterdir()] == ["e.npy"]


def test_hashing_embedder_is_deterministic_and_lexical():
    a, b = HashingEmbedder(64, seed=3), HashingEmbedder(64, seed=3)
    x = a.embed(["red apple pie", "apple pie red", "blue ocean wave", ""])
    np.testing.assert_array_equal(x, b.embed(["red apple pie", "apple pie red", "blue ocean wave", ""]))
    assert x[0] @ x[1] == pytest.approx(1.0, abs=1e-6)
    assert x[0] @ x[2] < 0.9 and not x[3].any()
    with pytest.raises(UserError, match="hash:<dim>"):
        build_embedder("hash:x")
