"""Build identity: the index directory and the service carry it, consumers refuse a mismatch.

A run opening its neighbour source (RETRO pretraining, QA fine-tuning / evaluation go through
``open_neighbour_source`` / ``check_searcher``) must get a one-line UserError naming both builds
when the service (or index) was built with another embedder, chunk store or index build.
"""
import json

import numpy as np
import pytest

from retrieval_testlib import clustered_vectors
from megatron_retro.config import RetrievalConfig
from megatron_retro.errors import UserError
from megatron_retro.retrieval.build import ShardedLocalIndex, build_index
from megatron_retro.retrieval.build_id import (BuildIdentity, canonical_embedder, check_build,
                                               compute_store_digest)
from megatron_retro.retrieval.chunk_store import ChunkStore, build_chunk_store
from megatron_retro.retrieval.sources import open_neighbour_source
from megatron_retro.retrieval.service.client import ShardedRetrievalClient
from megatron_retro.retrieval.service.server import ShardServer
from megatron_retro.retrieval.sharding import build_sharded_index, load_manifest


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):
    """Two index builds of the same store and embedder (different build ids), 2 shards each."""
    root = tmp_path_factory.mktemp("builds")
    for name in ("a", "b"):
        build_index(str(store.path), str(root / name), "hash:32", "flat", num_shards=2)
    return root


@pytest.fixture(scope="module")
def service_a(built, tmp_path_factory):
    """Build a served by two in-process shard servers; yields the endpoints file."""
    servers = [ShardServer(str(built / "a"), i, 2) for i in range(2)]
    endpoints = tmp_path_factory.mktemp("svc") / "endpoints.json"
    endpoints.write_text(json.dumps({"shards": [[s.address] for s in servers]}))
    yield str(endpoints)
    for s in servers:
        s.stop(0)


def test_manifest_and_service_report_the_same_identity(built, store, service_a):
    manifest = load_manifest(built / "a")
    ident = ShardedLocalIndex(str(built / "a")).identity
    assert ident == BuildIdentity(embedder="hash:32:0", dim=32, chunk_length=16, neighbour_length=32,
                                  store_digest=store.digest, index_build=manifest["build_id"])
    spec = json.loads(open(service_a).read())
    with ShardedRetrievalClient(spec["shards"]) as client:
        assert client.identity == ident
    assert ShardedLocalIndex(str(built / "b")).identity.index_build != ident.index_build


def test_service_of_the_expected_build_is_accepted(built, store, tokenizer, service_a):
    cfg = RetrievalConfig(mode="service", store=str(store.path), endpoints=service_a,
                          index_dir=str(built / "a"), embedder="hash:32", k=2)
    src = open_neighbour_source(cfg, tokenizer.decode)
    ids = np.array([[3, 4]])
    assert src.neighbours(store.chunks(ids), store.doc_ids(ids[:, 0])).shape == (1, 2, 2, 32)
    src.close()


@pytest.mark.parametrize("change, field", [("index", "index_build"), ("embedder", "embedder"),
                                           ("store", "store_digest")])
def test_mismatched_service_is_refused_with_one_line_naming_both_builds(built, store, tokenizer, service_a,
                                                                        tmp_path, change, field):
    kwargs = dict(mode="service", store=str(store.path), endpoints=service_a, index_dir=str(built / "a"),
                  embedder="hash:32", k=2)
    if change == "index":      # the run's own index is build b; the service serves build a
        kwargs["index_dir"] = str(built / "b")
    elif change == "embedder":  # same width, other hashing seed: different vectors
        kwargs["embedder"] = "hash:32:7"
    else:                       # a store with one token changed
        other = tmp_path / "store2"
        tokens = np.load(store.path / "tokens.npy")
        tokens[5] += 1
        docs = [(int(d), tokens[int(s):int(e)]) for d, s, e in _doc_spans(store)]
        build_chunk_store(docs, other, tokenizer.decode, chunk_length=16, neighbour_length=32)
        kwargs["store"] = str(other)
    with pytest.raises(UserError) as err:
        open_neighbour_source(RetrievalConfig(**kwargs), tokenizer.decode)
    msg = str(err.value)
    assert "\n" not in msg and f"differ in {field}" in msg and service_a in msg
    assert msg.count("embedder=hash:32") == 2 or change == "embedder"
    assert "serves build [" in msg and "this run expects [" in msg


def test_local_index_is_checked_too(built, store, tokenizer):
    cfg = RetrievalConfig(mode="local", store=str(store.path), index_dir=str(built / "a"), embedder="hash:32:3")
    with pytest.raises(UserError, match=r"retrieval index .*differ in embedder"):
        open_neighbour_source(cfg, tokenizer.decode)


def test_index_without_identity_is_refused(store, tokenizer, tmp_path):
    build_sharded_index(clustered_vectors(len(store), 32), tmp_path / "raw", "flat", 1)
    cfg = RetrievalConfig(mode="local", store=str(store.path), index_dir=str(tmp_path / "raw"), embedder="hash:32")
    with pytest.raises(UserError, match="reports no build identity"):
        open_neighbour_source(cfg, tokenizer.decode)


def test_store_digest_is_recorded_and_recomputable(store):
    meta = json.loads((store.path / "meta.json").read_text())
    assert meta["digest"] == compute_store_digest(store.path) == ChunkStore(store.path).digest


def test_identity_helpers():
    a = BuildIdentity("hash:32:0", 32, 16, 32, "abc", "")
    check_build(a, BuildIdentity("hash:32:0", 32, 16, 32, "abc", "f00"), "x")  # "" pins no index build
    with pytest.raises(UserError, match="differ in chunk_length"):
        check_build(a, BuildIdentity("hash:32:0", 32, 8, 32, "abc", "f00"), "x")
    assert canonical_embedder("minilm") == canonical_embedder("all-MiniLM-L6-v2")
    assert canonical_embedder("hash:8") == "hash:8:0"


def _doc_spans(store):
    """(doc id, first token, end token) of every document of a store."""
    starts, docs, ends = np.asarray(store.chunk_start), np.asarray(store.chunk_doc), np.asarray(store.doc_end)
    first = np.r_[True, docs[1:] != docs[:-1]]
    return list(zip(docs[first], starts[first], ends[first]))
