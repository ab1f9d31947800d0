"""Split a vector database into shard index files: train once, each shard adds its slice.

Notation: ``n`` vectors, ``d`` embedding width, ``N`` shards.

Layout of an index directory::

    manifest.json                      build id, N, dim, factory, metric, ntotal, id range per shard
    shard-00000-of-00002.faiss(.json)  one ``FaissIndex`` per shard, holding global chunk ids

Shard ``i`` holds the contiguous id range ``[bounds[i], bounds[i+1])``, so the parallel build
(one rank per shard) and the single-process build write identical files.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from megatron_retro.errors import UserError
from megatron_retro.io_atomic import write_text_atomic
from megatron_retro.retrieval.index import FaissIndex, IndexFactory


def shard_path(index_dir: str | os.PathLike, shard: int, num_shards: int) -> Path:
    return Path(index_dir) / f"shard-{shard:05d}-of-{num_shards:05d}.faiss"


def shard_bounds(n: int, num_shards: int) -> np.ndarray:
    """int64[N+1]: shard i holds ids [bounds[i], bounds[i+1]) (sizes differ by at most one)."""
    if num_shards < 1:
        raise UserError(f"num_shards={num_shards}: must be >= 1")
    return np.array([n * i // num_shards for i in range(num_shards + 1)], dtype=np.int64)


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected I/N, e.g. 0/2") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def train_sample_ids(n: int, train_size: Optional[int], seed: int = 0) -> np.ndarray:
    """Sorted ids of the vectors quantizers are trained on (all when train_size is None or >= n)."""
    if train_size is None or train_size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, train_size, replace=False)).astype(np.int64)


def train_empty_index(spec: str, sample: np.ndarray, **factory_kwargs) -> FaissIndex:
    index = IndexFactory.create(spec, sample.shape[1], **factory_kwargs)
    index.train(sample)
    return index


def build_shard(trained: FaissIndex, vectors: np.ndarray, ids: np.ndarray, path: Path) -> FaissIndex:
    """Copy the trained empty index, add one slice of vectors under their global ids, save."""
    import faiss

    trained._sync_cpu()
    shard = FaissIndex(faiss.clone_index(trained.cpu_index), trained.factory, trained.metric,
                       trained.params, use_gpu=False)
    step = 65536
    for lo in range(0, len(ids), step):
        shard.add(np.asarray(vectors[lo:lo + step], dtype=np.float32), ids[lo:lo + step])
    shard.save(path)
    return shard


def merge_topk(scores: Sequence[np.ndarray], ids: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (float32[n, k_i], int64[n, k_i]) lists into the global top-k.

    Order: higher score first, then smaller id; missing results (id -1) last.
    """
    s = np.concatenate(scores, axis=1)            # [n, sum k_i]
    i = np.concatenate(ids, axis=1)
    s = np.where(i < 0, -np.inf, s)
    tie = np.where(i < 0, np.iinfo(np.int64).max, i)
    order = np.lexsort((tie, -s), axis=-1)[:, :k]  # last key is primary
    return np.take_along_axis(s, order, 1).astype(np.float32), np.take_along_axis(i, order, 1)


def write_manifest(index_dir: Path, meta: dict) -> None:
    write_text_atomic(index_dir / "manifest.json", json.dumps(meta, indent=1))


def build_sharded_index(vectors: np.ndarray, out_dir: str | os.PathLike, spec: str = "flat",
                        num_shards: int = 1, train_size: Optional[int] = None, seed: int = 0,
                        extra_meta: Optional[dict] = None, **factory_kwargs) -> dict:
    """Train ``spec`` on a sample of ``vectors`` (float32[n, d], row i = chunk id i), write N shards.

    Returns the manifest.  The manifest is written last: a directory without one is incomplete.
    """
    n, dim = vectors.shape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sample = np.asarray(vectors[train_sample_ids(n, train_size, seed)], dtype=np.float32)
    trained = train_empty_index(spec, sample, **factory_kwargs)
    bounds = shard_bounds(n, num_shards)
    for i in range(num_shards):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        build_shard(trained, vectors[lo:hi], np.arange(lo, hi, dtype=np.int64), shard_path(out, i, num_shards))
    manifest = {"build_id": uuid.uuid4().hex, "num_shards": num_shards, "dim": int(dim),
                "factory": trained.factory, "metric": trained.metric, "ntotal": int(n),
                "bounds": bounds.tolist(), "params": trained.params, **(extra_meta or {})}
    write_manifest(out, manifest)
    return manifest


def load_manifest(index_dir: str | os.PathLike) -> dict:
    path = Path(index_dir) / "manifest.json"
    if not path.is_file():
        raise UserError(f"{index_dir}: no manifest.json (not an index directory, or its build did not finish)")
    return json.loads(path.read_text())
