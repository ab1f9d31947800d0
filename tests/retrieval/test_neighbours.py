"""In-process NeighbourSource: shapes, same-document exclusion, tokens = chunk + continuation."""
import numpy as np
import pytest

from megatron_retro.errors import UserError
from megatron_retro.retrieval.embedder import HashingEmbedder
from megatron_retro.retrieval.index import IndexFactory
from megatron_retro.retrieval.neighbours import SearchNeighbourSource


@pytest.fixture(scope="module")
def setup(store, tokenizer):
    emb = HashingEmbedder(48)
    x = emb.embed(store.texts())
    index = IndexFactory.create("flat", 48)
    index.add(x, np.arange(len(store)))
    return emb, x, index


def _reference(x, store, q, query_doc, k, exclude):
    """Slow reference: score every chunk, skip the query's document, take the best k."""
    out = []
    for qi, d in zip(q, query_doc):
        s = x @ qi
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))
        if exclude:
            order = [j for j in order if store.doc_ids(j) != d]
        out.append(order[:k])
    return np.array(out)


@pytest.mark.parametrize("exclude", [True, False])
def test_neighbours_match_reference(setup, store, tokenizer, exclude):
    emb, x, index = setup
    src = SearchNeighbourSource(index, store, emb, tokenizer.decode, k=3, exclude_same_doc=exclude, overfetch=1)
    ids = np.array([[0, 1, 2], [10, 11, 12]])                          # [bs=2, l=3]
    chunks = store.chunks(ids)                                          # [2, 3, m]
    doc_ids = store.doc_ids(ids[:, 0])
    out = src.neighbours(chunks, doc_ids)
    assert out.shape == (2, 3, 3, store.neighbour_length) and out.dtype == np.int64
    _, got = src.neighbour_ids(chunks, doc_ids)
    q = emb.embed([tokenizer.decode(c) for c in chunks.reshape(6, -1)])
    ref = _reference(x, store, q, np.repeat(doc_ids, 3), 3, exclude)
    # ties between equal scores may order differently; compare the scores of the picks
    for row, (g, r_) in enumerate(zip(got.reshape(6, 3), ref)):
        np.testing.assert_allclose(np.sort(x[g] @ q[row]), np.sort(x[r_] @ q[row]), atol=1e-5)
    if exclude:
        assert not np.isin(store.doc_ids(got), doc_ids[:, None, None]).any(axis=(1, 2)).any()
    else:  # a chunk's best match is itself
        np.testing.assert_array_equal(got[:, :, 0], ids)
    np.testing.assert_array_equal(out, store.neighbours(got))


def test_neighbours_are_topical(setup, store, tokenizer, corpus):
    emb, _, index = setup
    topic_of = {doc_id: topic for doc_id, topic, _ in corpus}
    src = SearchNeighbourSource(index, store, emb, tokenizer.decode, k=2)
    ids = np.arange(0, 40, 4).reshape(10, 1)
    _, got = src.neighbour_ids(store.chunks(ids), store.doc_ids(ids[:, 0]))
    same = [topic_of[int(store.doc_ids(g))] == topic_of[int(store.doc_ids(q))]
            for q, row in zip(ids[:, 0], got[:, 0]) for g in row]
    assert np.mean(same) >= 0.9


def test_short_database_pads_and_bad_shapes_are_named(store, tokenizer):
    emb = HashingEmbedder(16)
    index = IndexFactory.create("flat", 16)
    index.add(emb.embed([store.text(0), store.text(1)]), np.array([0, 1]))
    src = SearchNeighbourSource(index, store, emb, tokenizer.decode, k=4, exclude_same_doc=False)
    out = src.neighbours(store.chunks(np.array([[0]])), store.doc_ids([0]))
    assert (out[0, 0, 2:] == store.pad_id).all() and (out[0, 0, :2] != store.pad_id).any()
    with pytest.raises(UserError, match=r"chunks: shape \(2, 16\), expected \[bs, l, m\]"):
        src.neighbours(np.zeros((2, 16)), np.zeros(2))
    with pytest.raises(UserError, match=r"doc_ids: shape \(3,\), expected \[bs\]=\[2\]"):
        src.neighbours(np.zeros((2, 1, 16)), np.zeros(3))
