"""Client of the sharded retrieval service, one per data-parallel rank.

Notation: ``n`` queries, ``d`` embedding width, ``k`` results, ``N`` shards, ``R`` replicas.

``search(q float32[n, d], k)`` scatters every query batch to all N shards in parallel (one
replica each), merges the N partial top-k lists by score (ties: smaller id first) and returns
``(scores float32[n, k], ids int64[n, k])`` — the same contract as an in-process ``Index``.
On a dead replica (UNAVAILABLE, or out of its share of the deadline) it tries the shard's next
replica; if no replica of some shard answers before the deadline it raises
``RetrievalUnavailableError``.  It never returns a merge over an incomplete set of shards: every
shard 0..N-1 of one build must answer.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import grpc
import numpy as np

from megatron_retro.errors import RuntimeFailure, UserError
from megatron_retro.retrieval.build_id import BuildIdentity
from megatron_retro.retrieval.index import check_queries
from megatron_retro.retrieval.service import retrieval_pb2 as pb
from megatron_retro.retrieval.service import retrieval_pb2_grpc as pb_grpc
from megatron_retro.retrieval.service.server import channel_options
from megatron_retro.retrieval.sharding import merge_topk

# Errors that mean "this replica is gone or stuck": try another one.
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED}


class RetrievalUnavailableError(RuntimeFailure):
    """No live replica of some shard answered within the deadline."""


class RetrievalRequestError(UserError, RuntimeError):
    """A shard rejected the request (bad token, bad arguments): retrying elsewhere will not help.
    Bad input (exit 2 at the CLI); still a RuntimeError for callers that catch that."""


def info_identity(info) -> Optional[BuildIdentity]:
    """The build identity an ``InfoResponse`` reports (None: the shard's index has none)."""
    if not info.embedder:
        return None
    return BuildIdentity(embedder=info.embedder, dim=int(info.dim), chunk_length=int(info.chunk_length),
                         neighbour_length=int(info.neighbour_length), store_digest=info.store_digest,
                         index_build=info.build_id)


class ShardedRetrievalClient:
    """Searches all shards of one index build; see the module docstring."""

    def __init__(self, shards: Sequence[Sequence[str]], token: Optional[str] = None, timeout: float = 10.0,
                 max_message_bytes: int = 64 << 20, rank: int = 0, max_batch: Optional[int] = None,
                 tls_ca: Optional[bytes] = None):
        if not shards or any(not reps for reps in shards):
            raise UserError("retrieval client: need at least one endpoint for every shard")
        self.endpoints = [list(reps) for reps in shards]
        self.num_shards = len(self.endpoints)
        self.timeout = float(timeout)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._options = channel_options(max_message_bytes)
        # tls_ca: PEM root certificate(s) the servers' certificates chain to -> TLS channels
        self._credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca) if tls_ca else None
        self._max_message_bytes = max_message_bytes
        self._stubs: dict[str, pb_grpc.RetrievalStub] = {}
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()
        # spread data-parallel ranks over replicas; a failing replica moves the pointer on
        self._preferred = [rank % len(reps) for reps in self.endpoints]
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.num_shards), thread_name_prefix="retrieval")
        infos = self._scatter(lambda stub, timeout: stub.Info(pb.InfoRequest(), timeout=timeout,
                                                               metadata=self._metadata))
        self._check_infos(infos)
        first = infos[0]
        self.dim, self.build_id, self.metric = int(first.dim), first.build_id, first.metric
        self.identity = info_identity(first)
        self.ntotal = int(sum(info.ntotal for info in infos))
        self.max_k = int(min(info.max_k for info in infos))
        rows_by_size = max(1, (max_message_bytes - 1024) // (4 * self.dim + 12 * self.max_k))
        self.max_batch = int(min([info.max_batch for info in infos] + [rows_by_size] + ([max_batch] if max_batch else [])))

    @classmethod
    def from_file(cls, path: str, **kwargs) -> "ShardedRetrievalClient":
        """Build from the endpoints.json written by launch/retrieval_service.py."""
        try:
            spec = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: cannot read retrieval endpoints: {e}") from None
        if spec.get("tls_ca") and "tls_ca" not in kwargs:
            kwargs["tls_ca"] = Path(spec["tls_ca"]).read_bytes()
        return cls(spec["shards"], **kwargs)

    # -- plumbing ---------------------------------------------------------------------------
    def _stub(self, endpoint: str) -> pb_grpc.RetrievalStub:
        with self._lock:
            stub = self._stubs.get(endpoint)
            if stub is None:
                channel = (grpc.secure_channel(endpoint, self._credentials, options=self._options)
                           if self._credentials else grpc.insecure_channel(endpoint, options=self._options))
                self._channels.append(channel)
                stub = self._stubs[endpoint] = pb_grpc.RetrievalStub(channel)
            return stub

    def _call_shard(self, shard: int, call, deadline: float):
        reps = self.endpoints[shard]
        start = self._preferred[shard]
        errors = []
        for attempt in range(len(reps)):
            r = (start + attempt) % len(reps)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # leave later replicas a share of the deadline if this one hangs
            budget = remaining / (len(reps) - attempt)
            try:
                result = call(self._stub(reps[r]), budget)
                self._preferred[shard] = r
                return result
            except grpc.RpcError as e:
                code = e.code()
                if code not in _RETRYABLE:
                    raise RetrievalRequestError(f"shard {shard} ({reps[r]}): {code.name}: {e.details()}") from None
                errors.append(f"{reps[r]}: {code.name}")
        raise RetrievalUnavailableError(
            f"retrieval shard {shard}/{self.num_shards}: no live replica answered within {self.timeout:.1f}s "
            f"({'; '.join(errors) or 'deadline spent'})")

    def _scatter(self, call) -> list:
        deadline = time.monotonic() + self.timeout
        futs = [self._pool.submit(self._call_shard, i, call, deadline) for i in range(self.num_shards)]
        results, first_error = [], None
        for f in futs:  # wait for all, so no call outlives this search
            try:
                results.append(f.result())
            except (RetrievalUnavailableError, RetrievalRequestError) as e:
                first_error = first_error or e
        if first_error is not None:
            raise first_error
        return results

    def _check_infos(self, infos) -> None:
        builds = {(info_identity(info) or info.build_id) for info in infos}
        dims = {info.dim for info in infos}
        for i, info in enumerate(infos):
            if info.shard != i or info.num_shards != self.num_shards:
                raise UserError(f"retrieval endpoint list: position {i} answers as shard "
                                f"{info.shard}/{info.num_shards}, expected {i}/{self.num_shards}")
        if len(builds) != 1 or len(dims) != 1:
            names = sorted(b.describe() if isinstance(b, BuildIdentity) else b for b in builds)
            raise UserError(f"retrieval shards come from different index builds: {names}, dims {sorted(dims)}")

    # -- public API -------------------------------------------------------------------------
    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_queries(q, self.dim)
        if not 1 <= k <= self.max_k:
            raise UserError(f"k={k}: must be in [1, {self.max_k}]")
        n = q.shape[0]
        out_s = np.empty((n, k), np.float32)
        out_i = np.empty((n, k), np.int64)
        for lo in range(0, n, self.max_batch):
            sub = q[lo:lo + self.max_batch]
            req = pb.SearchRequest(queries=sub.astype("<f4").tobytes(), num_queries=len(sub), dim=self.dim, k=k)
            resps = self._scatter(lambda stub, timeout: stub.Search(req, timeout=timeout, metadata=self._metadata))
            parts_s, parts_i = [], []
            for shard, resp in enumerate(resps):
                if (resp.shard, resp.num_shards, resp.build_id) != (shard, self.num_shards, self.build_id) \
                        or resp.num_queries != len(sub) or resp.k != k:
                    raise RetrievalUnavailableError(
                        f"retrieval shard {shard}: answer from shard {resp.shard}/{resp.num_shards} of build "
                        f"{resp.build_id[:8]} does not match the expected set {shard}/{self.num_shards} of "
                        f"build {self.build_id[:8]}; refusing to merge an incomplete shard set")
                parts_s.append(np.frombuffer(resp.scores, "<f4").reshape(len(sub), k))
                parts_i.append(np.frombuffer(resp.ids, "<i8").reshape(len(sub), k))
            out_s[lo:lo + len(sub)], out_i[lo:lo + len(sub)] = merge_topk(parts_s, parts_i, k)
        return out_s, out_i

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for channel in self._channels:
            channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
