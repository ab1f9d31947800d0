"""Prefetching neighbour loader, and precomputed neighbours on disk.

Notation: ``bs`` samples, ``l`` chunks per sample, ``m`` chunk length, ``k`` neighbours,
``r`` neighbour length.

``PrefetchingNeighbourLoader`` wraps a training data iterator: while the trainer works on batch
``t`` it already asks the ``NeighbourSource`` for the neighbours of batches ``t+1 .. t+depth``
in background threads, so training waits only when retrieval is slower than training.  It
yields ``(batch, neighbours int64[bs, l, k, r])`` and counts the time spent waiting and the query
rows each batch sent to the source (``last_queries``; exact with one worker thread).

``precompute_neighbours`` runs the same loader once over a data set and writes every chunk's
neighbours to disk; ``PrecomputedNeighbourSource`` reads them back as a ``NeighbourSource``
keyed by (document id, chunk tokens), so later runs need no index and no service.
"""
from __future__ import annotations

import collections
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from megatron_retro.errors import UserError
from megatron_retro.io_atomic import atomic_dir
from megatron_retro.retrieval.build_id import BuildIdentity, check_build, store_identity
from megatron_retro.retrieval.neighbours import NeighbourSource, check_chunks

QueryFn = Callable[[Any], "tuple[np.ndarray, np.ndarray]"]


def tokens_to_chunks(chunk_length: int) -> QueryFn:
    """query_fn for batches ``{"tokens": int64[bs, ns], "doc_ids": int64[bs]}``: chunks [bs, ns//m, m]."""
    def fn(batch):
        tokens = np.asarray(batch["tokens"])
        bs, ns = tokens.shape
        l = ns // chunk_length
        return tokens[:, :l * chunk_length].reshape(bs, l, chunk_length), np.asarray(batch["doc_ids"])
    return fn


class PrefetchingNeighbourLoader:
    """Iterate ``(batch, neighbours)`` with the neighbours of the next ``depth`` batches in flight."""

    def __init__(self, batches: Iterable, source: NeighbourSource, query_fn: QueryFn,
                 depth: int = 2, workers: int = 1):
        if depth < 1 or workers < 1:
            raise UserError(f"prefetch depth={depth}, workers={workers}: both must be >= 1")
        self._it: Iterator = iter(batches)
        self.source, self.query_fn, self.depth = source, query_fn, depth
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neighbours")
        self._queue: collections.deque = collections.deque()
        self._exhausted = False
        self.steps = 0
        self.wait_seconds = 0.0
        self.waits: list[float] = []
        self.queries = 0       # query rows the source answered for the batches yielded so far
        self.last_queries = 0  # ... for the last batch yielded

    def _fetch(self, batch):
        chunks, doc_ids = self.query_fn(batch)
        before = getattr(self.source, "queries", 0)
        out = self.source.neighbours(chunks, doc_ids)
        return out, getattr(self.source, "queries", 0) - before

    def _fill(self) -> None:
        while not self._exhausted and len(self._queue) < self.depth:
            try:
                batch = next(self._it)  # the data iterator is only touched from this thread
            except StopIteration:
                self._exhausted = True
                break
            self._queue.append((batch, self._pool.submit(self._fetch, batch)))

    def __iter__(self):
        return self

    def __next__(self):
        self._fill()
        if not self._queue:
            self.close()
            raise StopIteration
        batch, future = self._queue.popleft()
        t0 = time.perf_counter()
        neighbours, self.last_queries = future.result()  # re-raises a retrieval error in this thread
        waited = time.perf_counter() - t0
        self._fill()  # keep `depth` batches in flight while the trainer works on this one
        self.steps += 1
        self.queries += self.last_queries
        self.wait_seconds += waited
        self.waits.append(waited)
        return batch, neighbours

    def run(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` on the loader's worker thread, after the fetches already queued (so a
        one-off fetch never runs concurrently with the prefetches on the same source)."""
        try:
            return self._pool.submit(fn).result()
        except RuntimeError as e:  # the pool is shut down: the loader is closed
            if "shutdown" not in str(e):
                raise
            return fn()

    def stats(self) -> dict:
        waits = np.asarray(self.waits or [0.0])
        return {"steps": self.steps, "wait_s": self.wait_seconds, "wait_p50_s": float(np.median(waits)),
                "wait_max_s": float(waits.max()), "queries": self.queries}

    def close(self) -> None:
        for _, fut in self._queue:
            fut.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=True)


def chunk_keys(chunks: np.ndarray, doc_ids: np.ndarray) -> np.ndarray:
    """uint64[bs, l]: a 64-bit hash of (document id, chunk tokens) for every chunk."""
    chunks, doc_ids = check_chunks(chunks, doc_ids)
    with np.errstate(over="ignore"):
        h = np.broadcast_to((doc_ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))[:, None],
                            chunks.shape[:2]).copy()                                    # [bs, l]
        for j in range(chunks.shape[2]):
            h = (h ^ chunks[:, :, j].astype(np.uint64)) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
    return h


def precompute_neighbours(batches: Iterable, source: NeighbourSource, query_fn: QueryFn,
                          out_dir: str | os.PathLike, depth: int = 2, workers: int = 1,
                          progress: bool = True) -> dict:
    """Fetch the neighbours of every chunk of ``batches`` and write them to ``out_dir`` atomically.

    Files: ``keys.npy`` uint64[n] (sorted), ``neighbours.npy`` int32[n, k, r], ``meta.json``.
    """
    from tqdm import tqdm

    keys_parts, nb_parts = [], []
    loader = PrefetchingNeighbourLoader(batches, source, query_fn, depth=depth, workers=workers)
    for batch, nb in tqdm(loader, desc="precompute neighbours", unit="batch", disable=not progress):
        chunks, doc_ids = query_fn(batch)
        keys_parts.append(chunk_keys(chunks, doc_ids).reshape(-1))
        nb_parts.append(nb.reshape(-1, source.k, source.r).astype(np.int32))
    keys = np.concatenate(keys_parts) if keys_parts else np.zeros(0, np.uint64)
    nbs = np.concatenate(nb_parts) if nb_parts else np.zeros((0, source.k, source.r), np.int32)
    meta = {"k": source.k, "r": source.r, "pad_id": source.pad_id,
            "retrieval_wait_s": loader.wait_seconds, "batches": loader.steps}
    identity = getattr(source, "identity", None)
    if identity is not None:  # the build these neighbours came from (checked by readers)
        meta["identity"] = identity.to_dict()
    return write_precomputed(out_dir, keys, nbs, meta)


def write_precomputed(out_dir: str | os.PathLike, keys: np.ndarray, table: np.ndarray, meta: dict) -> dict:
    """Write keys uint64[n] / neighbours int32[n, k, r] (sorted by key, one row per key) atomically."""
    out = Path(out_dir)
    keys, first = np.unique(keys, return_index=True)  # sorted; a repeated chunk has one answer
    table = table[first]
    meta = {**meta, "num_chunks": int(len(keys))}
    with atomic_dir(out) as tmp:
        np.save(tmp / "keys.npy", keys)
        np.save(tmp / "neighbours.npy", table)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


class PrecomputedNeighbourSource(NeighbourSource):
    """Neighbours read from a ``precompute_neighbours`` directory (memory-mapped).

    With ``store`` (the run's chunk store directory) and ``embedder`` the directory's recorded
    build identity must match them, and ``k`` (when given) the recorded neighbour count.
    """

    def __init__(self, path: str | os.PathLike, store: Optional[str] = None, embedder: Optional[str] = None,
                 k: Optional[int] = None):
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise UserError(f"{path}: no precomputed neighbours here (missing meta.json)")
        meta = json.loads((path / "meta.json").read_text())
        self.k, self.r, self.pad_id = int(meta["k"]), int(meta["r"]), int(meta["pad_id"])
        self.identity = BuildIdentity.from_dict(meta["identity"]) if meta.get("identity") else None
        if store is not None and embedder is not None:
            from megatron_retro.retrieval.chunk_store import ChunkStore

            dim = self.identity.dim if self.identity else 0  # implied by the embedder
            check_build(store_identity(ChunkStore(store), embedder, dim), self.identity,
                        f"precomputed neighbours {path}")
        if k is not None and k != self.k:
            raise UserError(f"{path}: precomputed with k={self.k} neighbours, this run asks for k={k}")
        self.path = path
        self.queries = 0  # chunk rows looked up
        self.keys = np.load(path / "keys.npy", mmap_mode="r")              # uint64[n]
        self.table = np.load(path / "neighbours.npy", mmap_mode="r")       # int32[n, k, r]

    def neighbours(self, chunks, doc_ids) -> np.ndarray:
        keys = chunk_keys(chunks, doc_ids)                                  # [bs, l]
        flat = keys.reshape(-1)
        self.queries += flat.size
        pos = np.searchsorted(self.keys, flat)
        pos = np.minimum(pos, max(len(self.keys) - 1, 0))
        found = (len(self.keys) > 0) & (np.asarray(self.keys[pos]) == flat) if len(self.keys) else np.zeros_like(flat, bool)
        if not found.all():
            b, j = divmod(int(np.argmin(found)), keys.shape[1])
            raise UserError(f"{self.path}: {int((~found).sum())} of {flat.size} chunks were not precomputed "
                            f"(first: sample {b}, chunk {j}); rerun precompute on this data")
        return np.asarray(self.table[pos], dtype=np.int64).reshape(keys.shape + (self.k, self.r))
