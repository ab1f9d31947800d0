"""``open_neighbour_source``: the run's ``retrieval:`` section turned into a ``NeighbourSource``
(in-process index, sharded service, or precomputed neighbours).

The config class has one home, ``megatron_retro.config.RetrievalConfig``; a run fills its unset
fields (store, index, embedder, k) from its own retrieval database with :func:`resolve`.  Every source is checked against the build the run expects
(``build_id.check_searcher``) before it answers a single query.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from megatron_retro.config import RetrievalConfig
from megatron_retro.errors import UserError

__all__ = ["open_neighbour_source", "open_searcher", "resolve"]

#: the fields each mode needs once the run's defaults are filled in
NEEDS = {"local": ("store", "index_dir"), "service": ("store", "endpoints"), "precomputed": ("precomputed",)}


def resolve(cfg: RetrievalConfig, **defaults) -> RetrievalConfig:
    """``cfg`` with every unset (None) field among ``defaults`` filled in from the run."""
    return dataclasses.replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})


def open_neighbour_source(cfg: RetrievalConfig, decode: Optional[Callable[[list[int]], str]] = None,
                          rank: int = 0):
    """Build the ``NeighbourSource`` ``cfg`` describes (``decode``: token ids -> text; ``rank``: DP rank)."""
    for name in NEEDS[cfg.mode]:
        if not getattr(cfg, name):
            raise UserError(f"retrieval.{name}: required when retrieval.mode={cfg.mode}")
    embedder_spec = cfg.embedder or "minilm"
    k = cfg.k or 2
    if cfg.mode == "precomputed":
        from megatron_retro.retrieval.prefetch import PrecomputedNeighbourSource

        return PrecomputedNeighbourSource(cfg.precomputed, store=cfg.store, embedder=embedder_spec, k=cfg.k)
    if decode is None:
        raise UserError(f"retrieval.mode={cfg.mode}: a decode function (the tokenizer's) is required")
    from megatron_retro.retrieval.build_id import check_searcher
    from megatron_retro.retrieval.chunk_store import ChunkStore
    from megatron_retro.retrieval.embedder import build_embedder
    from megatron_retro.retrieval.neighbours import SearchNeighbourSource

    store = ChunkStore(cfg.store)
    embedder = build_embedder(embedder_spec)
    searcher = open_searcher(cfg, cfg.index_dir, rank=rank)
    if searcher.dim != embedder.dim:
        raise UserError(f"retrieval.embedder={embedder_spec!r} gives dim {embedder.dim}, the index holds dim {searcher.dim}")
    check_searcher(searcher, store, embedder_spec, embedder.dim, cfg.index_dir,
                   cfg.endpoints if cfg.mode == "service" else None)
    exclude = True if cfg.exclude_same_doc is None else cfg.exclude_same_doc
    return SearchNeighbourSource(searcher, store, embedder, decode, k=k, exclude_same_doc=exclude)


def open_searcher(cfg: RetrievalConfig, index_dir: Optional[str], rank: int = 0):
    """The vector search of ``cfg.mode``: the in-process shards of ``index_dir`` (local, with
    ``cfg.nprobe``) or a client of the service at ``cfg.endpoints`` (``rank``: DP rank, spreads
    ranks over replicas).  Both have ``dim``, ``search(q, k)``, ``info()`` and ``close()``."""
    if cfg.mode == "local":
        from megatron_retro.retrieval.build import ShardedLocalIndex

        return ShardedLocalIndex(index_dir, nprobe=cfg.nprobe)
    if cfg.mode == "service":
        from megatron_retro.retrieval.service.client import ShardedRetrievalClient
        from megatron_retro.retrieval.service.server import read_token

        return ShardedRetrievalClient.from_file(cfg.endpoints, token=read_token(cfg.token_file),
                                                timeout=cfg.timeout, rank=rank)
    raise UserError(f"retrieval.mode={cfg.mode}: no vector search (choose local or service)")
