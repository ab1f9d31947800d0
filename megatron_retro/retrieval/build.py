"""Build a sharded index from a chunk store (one process), and evaluate an index's recall@k.

The multi-rank build (one shard per rank, train once) is in ``parallel_build``; both write
the same index directory layout (see ``sharding``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from megatron_retro.errors import UserError
from megatron_retro.retrieval.build_id import canonical_embedder, manifest_identity, store_digest, store_identity
from megatron_retro.retrieval.chunk_store import ChunkStore
from megatron_retro.retrieval.embedder import build_embedder, embed_chunk_store
from megatron_retro.retrieval.index import FaissIndex, IndexFactory
from megatron_retro.retrieval.sharding import build_sharded_index, load_manifest, merge_topk, shard_path


def load_or_embed(store: ChunkStore, embedder_spec: str, embeddings_file: str | os.PathLike,
                  batch_size: int = 128, device: Optional[str] = None) -> np.ndarray:
    """float32[C, d] chunk embeddings, computed once and cached at ``embeddings_file``."""
    path = Path(embeddings_file)
    if path.is_file():
        vectors = np.load(path, mmap_mode="r")
        if vectors.shape[0] != len(store):
            raise UserError(f"{path}: {vectors.shape[0]} rows but the chunk store has {len(store)} chunks")
        return vectors
    return embed_chunk_store(store, build_embedder(embedder_spec, device), path, batch_size=batch_size)


def check_rebuild(out_dir: str | os.PathLike, embedder: str, store_dir: Optional[str] = None) -> None:
    """Refuse to build over an index directory made with another embedder or from another chunk
    store: its cached ``embeddings.npy`` would be reused and the manifest would name a build that
    did not make the vectors (a relabelled index: queries embedded one way, searched against
    another).  Uses the build identity recorded in the manifest (``build_id``)."""
    if not (Path(out_dir) / "manifest.json").is_file():
        return
    manifest = load_manifest(out_dir)
    if manifest.get("identity"):
        built = manifest_identity(manifest, str(out_dir))
        built_with, asked = built.embedder, canonical_embedder(embedder)
    else:  # a manifest written before build identities: its raw embedder spec
        built, built_with, asked = None, manifest.get("embedder"), embedder
    if built_with is not None and built_with != asked:
        raise UserError(f"{out_dir}: holds an index built with embedder {built_with!r} (dim {manifest.get('dim')}); "
                        f"refusing to rebuild it with --embedder {embedder!r} (its cached embeddings would be "
                        "relabelled): choose another --out, or delete this one")
    if built is not None and store_dir is not None and built.store_digest:
        digest = store_digest(store_dir)
        if digest != built.store_digest:
            raise UserError(f"{out_dir}: holds an index of chunk store {built.store_digest[:12]}, --store {store_dir} "
                            f"is {digest[:12]} (its cached embeddings belong to the other store): choose another "
                            "--out, or delete this one")


def build_index(store_dir: str, out_dir: str, embedder: str = "minilm", factory: str = "flat",
                num_shards: int = 1, train_size: Optional[int] = None, embeddings: Optional[str] = None,
                batch_size: int = 128, **factory_kwargs) -> dict:
    check_rebuild(out_dir, embedder, None if embeddings else store_dir)
    store = ChunkStore(store_dir)
    vectors = load_or_embed(store, embedder, embeddings or Path(out_dir) / "embeddings.npy", batch_size)
    identity = store_identity(store, embedder, vectors.shape[1]).to_dict()
    return build_sharded_index(vectors, out_dir, factory, num_shards, train_size,
                               extra_meta={"embedder": embedder, "store": str(Path(store_dir).resolve()),
                                           "identity": identity},
                               **factory_kwargs)


class ShardedLocalIndex:
    """All shards of an index directory loaded in this process, searched and merged like the client."""

    def __init__(self, index_dir: str, **params):
        self._merge = merge_topk
        manifest = load_manifest(index_dir)
        n = manifest["num_shards"]
        self.shards = [FaissIndex.load(shard_path(index_dir, i, n), **params) for i in range(n)]
        self.dim = manifest["dim"]
        self.ntotal = sum(s.ntotal for s in self.shards)
        # None for indexes built from raw vectors (tests); consumers refuse those
        self.identity = manifest_identity(manifest, index_dir) if manifest.get("identity") else None

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        parts = [s.search(q, k) for s in self.shards]
        return self._merge([p[0] for p in parts], [p[1] for p in parts], k)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean |approx ∩ exact| / k over queries (int64[n, k] each)."""
    k = exact_ids.shape[1]
    return float(np.mean([len(set(a[a >= 0]) & set(e)) / k for a, e in zip(approx_ids, exact_ids)]))


def eval_index(index_dir: str, embeddings: str, num_queries: int = 1000, k: int = 10, seed: int = 0,
               **params) -> dict:
    """recall@k of the index against exact search, using database vectors as queries (self excluded)."""
    vectors = np.load(embeddings, mmap_mode="r")
    index = ShardedLocalIndex(index_dir, **params)
    if index.ntotal != vectors.shape[0]:
        raise UserError(f"{embeddings}: {vectors.shape[0]} rows, the index holds {index.ntotal}")
    rng = np.random.default_rng(seed)
    qids = np.sort(rng.choice(len(vectors), min(num_queries, len(vectors)), replace=False))
    q = np.asarray(vectors[qids], dtype=np.float32)
    exact = IndexFactory.create("flat", q.shape[1], use_gpu=False)
    exact.add(np.asarray(vectors, dtype=np.float32), np.arange(len(vectors)))

    def drop_self(ids):
        out = np.array([[j for j in row if j != qi][:k] for row, qi in zip(ids, qids)])
        return out

    _, e = exact.search(q, k + 1)
    _, a = index.search(q, k + 1)
    return {"recall_at_k": recall_at_k(drop_self(a), drop_self(e)), "k": k, "queries": len(qids),
            "ntotal": index.ntotal}
