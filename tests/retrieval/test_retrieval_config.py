"""RetrievalConfig (the run's one retrieval section) validation and open_neighbour_source (local mode vs a hand-built source)."""
import numpy as np
import pytest

from megatron_retro.config import ConfigError, RetrievalConfig, RunConfig
from megatron_retro.errors import UserError
from megatron_retro.retrieval.build import build_index
from megatron_retro.retrieval.sources import open_neighbour_source


def test_config_errors_name_the_field():
    with pytest.raises(UserError, match="retrieval.index_dir: required when retrieval.mode=local"):
        open_neighbour_source(RetrievalConfig(mode="local", store="s"))
    with pytest.raises(UserError, match="retrieval.precomputed: required when retrieval.mode=precomputed"):
        open_neighbour_source(RetrievalConfig(mode="precomputed"))
    with pytest.raises(ConfigError, match="retrieval.endpoints: required when retrieval.mode=service"):
        RetrievalConfig(mode="service", store="s")
    with pytest.raises(ConfigError, match="retrieval.k=0"):
        RetrievalConfig(mode="precomputed", precomputed="p", k=0)
    with pytest.raises(ConfigError, match="retrieval.mode='x'"):
        RetrievalConfig(mode="x")
    with pytest.raises(ConfigError, match="retrieval.prefetch_depth=0"):
        RetrievalConfig(prefetch_depth=0)
    assert RetrievalConfig is RunConfig().retrieval.__class__  # one class for the run and the library


def test_open_local_source(store, tokenizer, tmp_path):
    build_index(str(store.path), str(tmp_path / "idx"), "hash:32", "flat", num_shards=2)
    cfg = RetrievalConfig(mode="local", store=str(store.path), index_dir=str(tmp_path / "idx"), embedder="hash:32", k=3)
    src = open_neighbour_source(cfg, tokenizer.decode)
    ids = np.array([[4, 5]])
    out = src.neighbours(store.chunks(ids), store.doc_ids(ids[:, 0]))
    assert out.shape == (1, 2, 3, store.neighbour_length)
    _, nid = src.neighbour_ids(store.chunks(ids), store.doc_ids(ids[:, 0]))
    assert not (store.doc_ids(nid) == store.doc_ids(4)).any()
    bad = RetrievalConfig(mode="local", store=str(store.path), index_dir=str(tmp_path / "idx"), embedder="hash:16")
    with pytest.raises(UserError, match="gives dim 16, the index holds dim 32"):
        open_neighbour_source(bad, tokenizer.decode)
