"""Sharded gRPC service with real server processes (started once per module, bound to 127.0.0.1).

Acceptance: 1/2/4 shards, with and without replicas, return exactly what one in-process Flat
index returns; malformed requests get an error status and the server keeps serving (hypothesis);
a killed shard fails over to its replica with identical results, and without a live replica the
client raises a clear error within the deadline; SIGTERM exits cleanly.
"""
import threading
import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import clustered_vectors
from megatron_retro.retrieval.embedder import HashingEmbedder
from megatron_retro.retrieval.index import IndexFactory
from megatron_retro.retrieval.neighbours import SearchNeighbourSource
from megatron_retro.retrieval.service import retrieval_pb2 as pb
from megatron_retro.retrieval.service import retrieval_pb2_grpc as pb_grpc
from megatron_retro.retrieval.service.client import (RetrievalRequestError, RetrievalUnavailableError,
                                                     ShardedRetrievalClient, merge_topk)
from megatron_retro.retrieval.service.launcher import start_service
from megatron_retro.retrieval.sharding import build_sharded_index

pytestmark = pytest.mark.distributed
TOKEN = "test-token-0123"
DIM = 32
MAX_BATCH = 64


def _flat(x):
    index = IndexFactory.create("flat", x.shape[1])
    index.add(x, np.arange(len(x)))
    return index


@pytest.fixture(scope="module")
def data(store):
    return {"store": HashingEmbedder(DIM).embed(store.texts()), "clustered": clustered_vectors(3000, DIM, seed=3)}


@pytest.fixture(scope="module")
def services(data, tmp_path_factory):
    """{num_shards: (vectors name, ServiceProcesses)}: 1x1 over the chunk store, 2x2 and 4x1 over clustered data."""
    layout = {1: ("store", 1), 2: ("clustered", 2), 4: ("clustered", 1)}
    started = {}
    try:
        for n, (name, replicas) in layout.items():
            d = tmp_path_factory.mktemp(f"index{n}")
            build_sharded_index(data[name], d, "flat", n)
            started[n] = (name, start_service(str(d), n, replicas, token=TOKEN,
                                              extra_args=["--max-batch", str(MAX_BATCH), "--max-k", "100"]))
        yield started
    finally:
        for _, svc in started.values():
            svc.stop()
        for _, svc in started.values():
            assert all(p.returncode == 0 for p in svc.procs.values()), "SIGTERM must exit cleanly"


@pytest.mark.parametrize("num_shards", [1, 2, 4])
def test_sharded_search_equals_one_flat_index(services, data, num_shards):
    name, svc = services[num_shards]
    x = data[name]
    q = clustered_vectors(150, DIM, seed=9)  # > MAX_BATCH: the client splits the batch
    with ShardedRetrievalClient(svc.endpoints, token=TOKEN, timeout=20) as client:
        assert client.ntotal == len(x) and client.max_batch == MAX_BATCH
        for k in (1, 2, 7):
            s, i = client.search(q, k)
            rs, ri = _flat(x).search(q, k)
            np.testing.assert_array_equal(s, rs)
            untied = np.ones_like(ri, dtype=bool)
            untied[:, 1:] &= rs[:, 1:] != rs[:, :-1]
            untied[:, :-1] &= rs[:, :-1] != rs[:, 1:]
            np.testing.assert_array_equal(i[untied], ri[untied])
            assert untied.mean() > 0.9


def test_client_backed_neighbour_source_matches_in_process(services, data, store, tokenizer):
    _, svc = services[1]
    emb = HashingEmbedder(DIM)
    ids = np.arange(0, 60, 3).reshape(5, 4)                    # [bs=5, l=4]
    chunks, docs = store.chunks(ids), store.doc_ids(ids[:, 0])
    local = SearchNeighbourSource(_flat(data["store"]), store, emb, tokenizer.decode, k=2)
    with ShardedRetrievalClient(svc.endpoints, token=TOKEN) as client:
        remote = SearchNeighbourSource(client, store, emb, tokenizer.decode, k=2)
        rs, ri = remote.neighbour_ids(chunks, docs)
        ls, li = local.neighbour_ids(chunks, docs)
        np.testing.assert_array_equal(rs, ls)
        out = remote.neighbours(chunks, docs)
    assert out.shape == (5, 4, 2, store.neighbour_length)
    np.testing.assert_array_equal(out, store.neighbours(ri))
    assert not (store.doc_ids(ri) == docs[:, None, None]).any()


def test_merge_topk_orders_by_score_then_id():
    s, i = merge_topk([np.array([[0.9, 0.5]]), np.array([[0.9, -np.inf]])], [np.array([[7, 3]]), np.array([[2, -1]])], 3)
    np.testing.assert_array_equal(i, [[2, 7, 3]])
    np.testing.assert_array_equal(s, np.array([[0.9, 0.9, 0.5]], np.float32))


@pytest.fixture(scope="module")
def raw_stub(services):
    _, svc = services[2]
    channel = grpc.insecure_channel(svc.endpoints[1][0])
    yield pb_grpc.RetrievalStub(channel)
    channel.close()


_good_q = clustered_vectors(4, DIM, seed=11)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.sampled_from([-1, 0, 1, 4, MAX_BATCH + 1, 100_000]),
       dim=st.sampled_from([DIM, DIM - 1, 0, -3, 1 << 40]),
       k=st.sampled_from([-1, 0, 1, 3, 100, 101, 1 << 62]),
       payload=st.sampled_from(["exact", "short", "long", "nan", "inf", "empty"]),
       token=st.sampled_from(["right", "wrong", "missing"]))
def test_malformed_requests_get_error_status_and_server_keeps_serving(raw_stub, n, dim, k, payload, token):
    rows = max(n, 0) if n < 1000 else 1
    body = np.resize(_good_q, (rows, DIM)).astype("<f4") if rows else np.zeros((0, DIM), "<f4")
    if payload == "nan" and rows:
        body = body.copy(); body[0, 0] = np.nan
    if payload == "inf" and rows:
        body = body.copy(); body[-1, -1] = np.inf
    raw = body.tobytes()
    raw = {"short": raw[:-4], "long": raw + b"\0\0\0\0", "empty": b""}.get(payload, raw)
    metadata = {"right": (("authorization", f"Bearer {TOKEN}"),), "wrong": (("authorization", "Bearer nope"),),
                "missing": ()}[token]
    req = pb.SearchRequest(queries=raw, num_queries=n, dim=dim, k=k)
    valid = (token == "right" and 1 <= n <= MAX_BATCH and dim == DIM and 1 <= k <= 100
             and payload in ("exact",) and rows == n)
    try:
        resp = raw_stub.Search(req, timeout=10, metadata=metadata)
        assert valid, f"accepted a malformed request n={n} dim={dim} k={k} payload={payload} token={token}"
        assert resp.num_queries == n and len(resp.ids) == n * k * 8
    except grpc.RpcError as e:
        assert not valid, f"rejected a valid request: {e.code()} {e.details()}"
        expected = grpc.StatusCode.UNAUTHENTICATED if token != "right" else grpc.StatusCode.INVALID_ARGUMENT
        assert e.code() == expected, (e.code(), e.details())
    # the server still answers a good request
    ok = raw_stub.Search(pb.SearchRequest(queries=_good_q.astype("<f4").tobytes(), num_queries=4, dim=DIM, k=2),
                         timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),))
    assert ok.num_queries == 4


def test_client_rejects_bad_token_and_bad_queries(services):
    _, svc = services[2]
    with pytest.raises(RetrievalRequestError, match="UNAUTHENTICATED"):
        ShardedRetrievalClient(svc.endpoints, token="wrong")
    with ShardedRetrievalClient(svc.endpoints, token=TOKEN) as client:
        with pytest.raises(Exception, match="NaN"):
            client.search(np.full((2, DIM), np.nan, np.float32), 2)
        with pytest.raises(Exception, match=r"k=101: must be in \[1, 100\]"):
            client.search(_good_q, 101)
    # endpoints listed in the wrong shard order are refused, not merged
    with pytest.raises(Exception, match="position 0 answers as shard 1/2"):
        ShardedRetrievalClient(svc.endpoints[::-1], token=TOKEN)


def test_killed_shard_fails_over_to_replica_then_errors_within_deadline(data, tmp_path):
    d = tmp_path / "index"
    build_sharded_index(data["clustered"], d, "flat", 2)
    svc = start_service(str(d), 2, 2, token=TOKEN)
    try:
        q = clustered_vectors(256, DIM, seed=21)
        ref = _flat(data["clustered"]).search(q, 2)
        client = ShardedRetrievalClient(svc.endpoints, token=TOKEN, timeout=3.0)
        results, errors, stop = [], [], threading.Event()

        def loop():  # queries keep flowing while a replica dies
            while not stop.is_set():
                try:
                    results.append(client.search(q, 2))
                except Exception as e:  # noqa: BLE001 - recorded and asserted on below
                    errors.append(e)

        t = threading.Thread(target=loop)
        t.start()
        time.sleep(0.5)
        svc.kill(0, client._preferred[0])  # the replica shard 0 is using right now
        time.sleep(1.0)
        stop.set()
        t.join()
        assert not errors, errors[:1]
        assert len(results) >= 3
        for s, i in results:
            np.testing.assert_array_equal(i, ref[1])
            np.testing.assert_array_equal(s, ref[0])
        # no live replica of shard 0 left: a clear error within the deadline, never partial results
        for r in range(2):
            if svc.procs[(0, r)].poll() is None:
                svc.kill(0, r)
        t0 = time.monotonic()
        with pytest.raises(RetrievalUnavailableError, match=r"retrieval shard 0/2: no live replica"):
            client.search(q, 2)
        assert time.monotonic() - t0 < 3.0 + 0.5
        client.close()
    finally:
        svc.stop()
    assert svc.procs[(1, 0)].returncode == 0 and svc.procs[(1, 1)].returncode == 0
