"""IndexFactory / FaissIndex: every index type against exact search, save/load, errors."""
import numpy as np
import pytest

from conftest import clustered_vectors
from megatron_retro.errors import UserError
from megatron_retro.retrieval.index import FaissIndex, IndexFactory


def _exact(x, q, k):
    s = q @ x.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize("spec,min_recall", [
    ("flat", 1.0), ("ivf-flat", 0.9), ("IVF8,PQ8x4", 0.35), ("hnsw", 0.9), ("OPQ8,IVF8,PQ8x4", 0.35),
])
def test_index_types_recall_and_roundtrip(spec, min_recall, tmp_path):
    x = clustered_vectors(1000, 16, seed=1)
    q = clustered_vectors(100, 16, seed=2)
    ids = np.arange(len(x), dtype=np.int64) + 10_000  # caller ids, not positions
    index = IndexFactory.create(spec, 16, nlist=8, nprobe=4)
    index.train(x[:400])  # quantizers are trained on a sample, as on a real database
    index.add(x, ids)
    assert index.ntotal == 1000
    scores, got = index.search(q, 5)
    assert scores.shape == got.shape == (100, 5) and got.dtype == np.int64
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first, higher = closer
    ref_s, ref = _exact(x, q, 5)
    recall = np.mean([len(set(a) & set(b - 10_000)) / 5 for a, b in zip(ref, got)])
    assert recall >= min_recall, f"{spec}: recall@5 {recall:.2f}"
    if min_recall == 1.0:
        np.testing.assert_array_equal(got - 10_000, ref)
        np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)
    index.save(tmp_path / "i.faiss")
    loaded = FaissIndex.load(tmp_path / "i.faiss")
    assert loaded.factory == index.factory and loaded.params == index.params
    s2, i2 = loaded.search(q, 5)
    np.testing.assert_array_equal(i2, got)
    np.testing.assert_array_equal(s2, scores)


def test_l2_scores_are_negated_distances_and_missing_results_are_minus_one():
    x = clustered_vectors(10, 8)
    index = IndexFactory.create("Flat", 8, metric="l2")
    index.add(x, np.arange(10))
    scores, ids = index.search(x[:2], 12)
    assert ids[0, 0] == 0 and scores[0, 0] == pytest.approx(0.0, abs=1e-5)
    assert (scores[:, :10] <= 1e-5).all()
    assert (ids[:, 10:] == -1).all() and np.isneginf(scores[:, 10:]).all()


def test_index_errors_are_clear():
    index = IndexFactory.create("flat", 8)
    with pytest.raises(UserError, match=r"shape \(3, 7\), expected \[n, 8\]"):
        index.search(np.zeros((3, 7), np.float32), 1)
    with pytest.raises(UserError, match="NaN"):
        index.search(np.full((1, 8), np.nan, np.float32), 1)
    with pytest.raises(UserError, match="k=0"):
        index.search(np.zeros((1, 8), np.float32), 0)
    with pytest.raises(UserError, match="factory string 'IVFx'"):
        IndexFactory.create("IVFx", 8)
    with pytest.raises(UserError, match="PQ16 needs dim divisible by 16"):
        IndexFactory.create("IVF4,PQ16", 24)
    ivf = IndexFactory.create("IVF4,Flat", 8)
    with pytest.raises(UserError, match="must be trained"):
        ivf.add(np.zeros((1, 8), np.float32), np.zeros(1))
