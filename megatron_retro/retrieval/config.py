"""Typed settings of the retrieval stack, and ``open_neighbour_source`` that turns them into a
``NeighbourSource`` (in-process index, sharded service, or precomputed neighbours).

The lead's ``RunConfig`` can embed ``RetrievalConfig`` as a ``retrieval:`` section; it has no
dependency on anything but the standard library until ``open_neighbour_source`` is called.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

from megatron_retro.errors import UserError


@dataclass
class RetrievalConfig:
    """Where neighbours come from and what they look like."""

    mode: Literal["local", "service", "precomputed"] = "local"  # in-process index | gRPC shards | files
    store: Optional[str] = None          # chunk store directory (local, service)
    index_dir: Optional[str] = None      # index directory (local)
    endpoints: Optional[str] = None      # endpoints.json of launch/retrieval_service.py (service)
    precomputed: Optional[str] = None    # directory written by precompute_neighbours (precomputed)
    embedder: str = "minilm"             # minilm | hash:<dim> | sentence-transformers model path
    k: int = 2                           # neighbours per chunk (2 in RETRO pretraining, 5 in fine-tuning)
    exclude_same_doc: bool = True        # RETRO pretraining rule: no neighbours from the query's document
    timeout: float = 30.0                # service: deadline of one search, seconds
    token_file: Optional[str] = None     # service: auth token file (else env MEGATRON_RETRO_RETRIEVAL_TOKEN)
    prefetch_depth: int = 2              # batches whose neighbours are fetched ahead
    nprobe: Optional[int] = None         # local: IVF lists probed (None = as built)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        need = {"local": ("store", "index_dir"), "service": ("store", "endpoints"), "precomputed": ("precomputed",)}
        if self.mode not in need:
            raise UserError(f"retrieval.mode={self.mode!r}: must be one of {sorted(need)}")
        for name in need[self.mode]:
            if not getattr(self, name):
                raise UserError(f"retrieval.{name}: required when retrieval.mode={self.mode}")
        if self.k < 1:
            raise UserError(f"retrieval.k={self.k}: must be >= 1")
        if self.timeout <= 0:
            raise UserError(f"retrieval.timeout={self.timeout}: must be > 0")
        if self.prefetch_depth < 1:
            raise UserError(f"retrieval.prefetch_depth={self.prefetch_depth}: must be >= 1")


def open_neighbour_source(cfg: RetrievalConfig, decode: Optional[Callable[[list[int]], str]] = None,
                          rank: int = 0):
    """Build the ``NeighbourSource`` ``cfg`` describes (``decode``: token ids -> text; ``rank``: DP rank)."""
    if cfg.mode == "precomputed":
        from megatron_retro.retrieval.prefetch import PrecomputedNeighbourSource

        return PrecomputedNeighbourSource(cfg.precomputed)
    if decode is None:
        raise UserError(f"retrieval.mode={cfg.mode}: a decode function (the tokenizer's) is required")
    from megatron_retro.retrieval.build_id import check_searcher
    from megatron_retro.retrieval.chunk_store import ChunkStore
    from megatron_retro.retrieval.embedder import build_embedder
    from megatron_retro.retrieval.neighbours import SearchNeighbourSource

    store = ChunkStore(cfg.store)
    embedder = build_embedder(cfg.embedder)
    if cfg.mode == "local":
        from megatron_retro.retrieval.build import ShardedLocalIndex

        searcher = ShardedLocalIndex(cfg.index_dir, nprobe=cfg.nprobe)
    else:
        from megatron_retro.retrieval.service.client import ShardedRetrievalClient
        from megatron_retro.retrieval.service.server import read_token

        searcher = ShardedRetrievalClient.from_file(cfg.endpoints, token=read_token(cfg.token_file),
                                                    timeout=cfg.timeout, rank=rank)
    if searcher.dim != embedder.dim:
        raise UserError(f"retrieval.embedder={cfg.embedder!r} gives dim {embedder.dim}, the index holds dim {searcher.dim}")
    check_searcher(searcher, store, cfg.embedder, embedder.dim, cfg.index_dir,
                   cfg.endpoints if cfg.mode == "service" else None)
    return SearchNeighbourSource(searcher, store, embedder, decode, k=cfg.k, exclude_same_doc=cfg.exclude_same_doc)
