"""Chunk store: chunking, neighbours = chunk + continuation within a document, padding, atomicity."""
import numpy as np
import pytest

from megatron_retro.errors import UserError
from megatron_retro.retrieval.chunk_store import ChunkStore, build_chunk_store


def _decode(ids):
    return " ".join(f"t{i}" for i in ids)


def test_chunks_and_neighbours_match_slow_reference(tmp_path):
    rng = np.random.default_rng(0)
    docs = [(7, rng.integers(1, 50, 37)), (3, rng.integers(1, 50, 8)), (9, []), (11, rng.integers(1, 50, 20))]
    store = build_chunk_store(docs, tmp_path / "s", _decode, chunk_length=8, neighbour_length=20, pad_id=0)
    # slow reference: walk each document
    ref_chunks, ref_nb, ref_doc = [], [], []
    for doc_id, toks in docs:
        toks = list(toks)
        for s in range(0, len(toks), 8):
            ref_chunks.append((toks[s:s + 8] + [0] * 8)[:8])
            ref_nb.append((toks[s:s + 20] + [0] * 20)[:20])
            ref_doc.append(doc_id)
    assert len(store) == len(ref_chunks) == 5 + 1 + 3
    ids = np.arange(len(store))
    np.testing.assert_array_equal(store.chunks(ids), ref_chunks)
    np.testing.assert_array_equal(store.neighbours(ids), ref_nb)
    np.testing.assert_array_equal(store.doc_ids(ids), ref_doc)
    assert store.num_docs == 3
    assert store.text(5) == _decode(docs[1][1])
    # -1 ids (missing neighbours) are all padding; shapes are kept
    nb = store.neighbours(np.array([[0, -1]]))
    assert nb.shape == (1, 2, 20) and (nb[0, 1] == 0).all()
    # arrays are memory-mapped, and a reopened store reads the same
    assert isinstance(store.tokens, np.memmap)
    np.testing.assert_array_equal(ChunkStore(tmp_path / "s").neighbours(ids), ref_nb)


def test_store_is_written_atomically(tmp_path):
    def bad_docs():
        yield (1, [1, 2, 3])
        raise RuntimeError("tokenizer crashed")

    with pytest.raises(RuntimeError):
        build_chunk_store(bad_docs(), tmp_path / "s", _decode, chunk_length=2, neighbour_length=4)
    assert list(tmp_path.iterdir()) == []  # neither the store nor a temporary directory remains


def test_bad_input_is_named(tmp_path):
    with pytest.raises(UserError, match="duplicate doc_id 1"):
        build_chunk_store([(1, [1]), (1, [2])], tmp_path / "a", _decode)
    with pytest.raises(UserError, match="neighbour_length=4: must be >= chunk_length=8"):
        build_chunk_store([(1, [1])], tmp_path / "b", _decode, chunk_length=8, neighbour_length=4)
    build_chunk_store([(1, [1])], tmp_path / "c", _decode)
    with pytest.raises(UserError, match="already exists"):
        build_chunk_store([(1, [1])], tmp_path / "c", _decode)
    with pytest.raises(UserError, match="not a chunk store"):
        ChunkStore(tmp_path)
