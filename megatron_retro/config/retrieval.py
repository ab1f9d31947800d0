"""``retrieval:``: the one retrieval config class (local index, sharded service or precomputed
neighbours); ``megatron_retro.retrieval.sources`` opens what it describes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from megatron_retro.config.base import cfg, require


@dataclass
class RetrievalConfig:
    """Where a run's neighbours / passages come from: the one ``retrieval:`` section.

    The database itself (chunk store + index) is the run's: ``retro.retrieval_dir`` (RETRO
    pretraining) or the QA task corpus's (``qa.retrieval_dir``); the service must serve that
    index (launch/retrieval_service.py writes the endpoints file).  ``store``, ``index_dir``,
    ``embedder``, ``k`` and ``exclude_same_doc`` are filled from the run when left unset
    (``megatron_retro.retrieval.sources.open_neighbour_source`` checks what each mode needs).
    """

    mode: Literal["local", "service", "precomputed"] = cfg(
        "local", "local: search the index in this process; service: query the shard servers listed in "
                 "retrieval.endpoints; precomputed: read neighbours written by `megatron-retro index precompute`")
    endpoints: Optional[str] = cfg(None, "endpoints.json of the running retrieval service (mode=service)")
    timeout: float = cfg(30.0, "deadline of one search through the service, seconds")
    token_file: Optional[str] = cfg(None, "auth token file of the service (else env MEGATRON_RETRO_RETRIEVAL_TOKEN)")
    prefetch_depth: int = cfg(2, "training steps whose neighbours are fetched ahead, in background threads")
    precomputed: Optional[str] = cfg(None, "directory of precomputed neighbours (mode=precomputed; "
                                           "None = <retrieval db>/precomputed)")
    store: Optional[str] = cfg(None, "chunk store directory (None = the run's retrieval database)")
    index_dir: Optional[str] = cfg(None, "index directory (None = the run's retrieval database)")
    embedder: Optional[str] = cfg(None, "query embedder (None = retro.embedder / qa.embedder)")
    k: Optional[int] = cfg(None, "neighbours per chunk (None = retro.num_neighbours / qa.num_passages)")
    exclude_same_doc: Optional[bool] = cfg(None, "drop neighbours from the query's document "
                                                 "(None = retro.exclude_same_doc)")
    nprobe: Optional[int] = cfg(None, "local mode: IVF lists probed (None = as built)")

    def __post_init__(self) -> None:
        require(self.mode in ("local", "service", "precomputed"),
                 f"retrieval.mode={self.mode!r}: must be one of local, service, precomputed")
        require(self.mode != "service" or bool(self.endpoints),
                 "retrieval.endpoints: required when retrieval.mode=service")
        require(self.timeout > 0, f"retrieval.timeout={self.timeout}: must be > 0")
        require(self.prefetch_depth >= 1, f"retrieval.prefetch_depth={self.prefetch_depth}: must be >= 1")
        require(self.k is None or self.k >= 1, f"retrieval.k={self.k}: must be >= 1")
