#!/usr/bin/env python
"""Query a running sharded retrieval service: every shard alone, then the merged client; print JSON.

    MEGATRON_RETRO_RETRIEVAL_TOKEN=... python docker/query_retrieval.py --endpoints E.json \
        --embeddings runs/index/embeddings.npy [--wait 90]

The compose smoke test's client (tests/ops/test_ops_docker.py runs it in a container beside the
shard containers).  Queries are database vectors (rows 0, 1, n/2, n-1 of the chunk embeddings the
index was built from), so the exact answer is known.  Output: each shard's Info and top-1 per
query, the merged top-1 ids and scores, and ``answered_by``: the shard whose own top-1 the merged
answer is, per query.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv=None) -> int:
    from megatron_retro.retrieval.service import retrieval_pb2 as pb
    from megatron_retro.retrieval.service.client import RetrievalUnavailableError, ShardedRetrievalClient

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoints", required=True, help="endpoints JSON ({shards: [[host:port, ...], ...]})")
    p.add_argument("--embeddings", required=True, help="the chunk embeddings the index was built from (.npy)")
    p.add_argument("--wait", type=float, default=90.0, help="seconds to wait for every shard to answer")
    args = p.parse_args(argv)
    token = os.environ.get("MEGATRON_RETRO_RETRIEVAL_TOKEN")
    vectors = np.load(args.embeddings, mmap_mode="r")
    n = vectors.shape[0]
    rows = sorted({0, 1, n // 2, n - 1})
    queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)   # [q, d]

    deadline = time.monotonic() + args.wait
    while True:
        try:
            client = ShardedRetrievalClient.from_file(args.endpoints, token=token, timeout=10.0)
            break
        except RetrievalUnavailableError as e:
            if time.monotonic() > deadline:
                print(f"query_retrieval: error: {e}", file=sys.stderr)
                return 1
            time.sleep(1.0)

    shards = []
    for i, reps in enumerate(client.endpoints):
        stub = client._stub(reps[0])
        info = stub.Info(pb.InfoRequest(), timeout=10.0, metadata=client._metadata)
        req = pb.SearchRequest(queries=queries.astype("<f4").tobytes(), num_queries=len(rows), dim=client.dim, k=1)
        resp = stub.Search(req, timeout=10.0, metadata=client._metadata)
        top1 = np.frombuffer(resp.ids, "<i8").tolist()
        shards.append({"shard": int(resp.shard), "endpoint": reps[0], "ntotal": int(info.ntotal), "top1": top1})
    scores, ids = client.search(queries, k=1)
    merged = ids[:, 0].tolist()
    answered_by = [next((s["shard"] for s in shards if s["top1"][q] == merged[q]), None) for q in range(len(rows))]
    print(json.dumps({"queries": rows, "merged_top1": merged, "merged_scores": scores[:, 0].tolist(),
                      "self_scores": np.einsum("qd,qd->q", queries, queries).tolist(),
                      "shards": shards, "answered_by": answered_by}))
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
