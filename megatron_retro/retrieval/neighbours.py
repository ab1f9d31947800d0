"""``NeighbourSource``: the one seam RETRO data code uses to get retrieved neighbours.

Notation: ``bs`` samples, ``l`` chunks per sample, ``m`` chunk length, ``k`` neighbours per
chunk, ``r`` neighbour length (chunk + continuation), ``d`` embedding width.

``neighbours(chunks int64[bs, l, m], doc_ids int64[bs]) -> int64[bs, l, k, r]``.

``SearchNeighbourSource`` implements it over anything with ``search(q, k) -> (scores, ids)``
and ``ntotal``: an in-process ``Index`` or the sharded service client.  It decodes the query
chunks to text, embeds them, searches, drops neighbours from the query's own document (the
RETRO pretraining rule, switchable), and looks the neighbour tokens up in the chunk store.
"""
from __future__ import annotations

import abc
from typing import Callable, Optional, Protocol

import numpy as np

from megatron_retro.errors import UserError


class Searcher(Protocol):
    ntotal: int

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class NeighbourSource(abc.ABC):
    """Gives the token ids of the ``k`` nearest neighbours of every chunk of a batch."""

    #: neighbours per chunk
    k: int
    #: neighbour length (chunk + continuation)
    r: int
    #: token id filling missing neighbours and the tail of neighbours cut by a document end
    pad_id: int

    @abc.abstractmethod
    def neighbours(self, chunks: np.ndarray, doc_ids: np.ndarray) -> np.ndarray:
        """chunks int64[bs, l, m], doc_ids int64[bs] -> int64[bs, l, k, r]."""

    def close(self) -> None:
        """Release connections or files (no-op by default)."""


def check_chunks(chunks, doc_ids) -> tuple[np.ndarray, np.ndarray]:
    chunks = np.asarray(chunks)
    doc_ids = np.asarray(doc_ids)
    if chunks.ndim != 3:
        raise UserError(f"chunks: shape {tuple(chunks.shape)}, expected [bs, l, m]")
    if doc_ids.shape != (chunks.shape[0],):
        raise UserError(f"doc_ids: shape {tuple(doc_ids.shape)}, expected [bs]=[{chunks.shape[0]}]")
    return chunks.astype(np.int64, copy=False), doc_ids.astype(np.int64, copy=False)


class SearchNeighbourSource(NeighbourSource):
    """Embed query chunks, search a ``Searcher``, return neighbour tokens from a chunk store."""

    def __init__(self, searcher: Searcher, store, embedder, decode: Callable[[list[int]], str],
                 k: int = 2, exclude_same_doc: bool = True, embed_batch_size: int = 256,
                 overfetch: int = 8):
        if k < 1:
            raise UserError(f"k={k}: must be >= 1")
        self.searcher = searcher
        self.store = store
        self.embedder = embedder
        self.decode = decode
        self.k = k
        self.r = store.neighbour_length
        self.pad_id = store.pad_id
        self.exclude_same_doc = exclude_same_doc
        self.embed_batch_size = embed_batch_size
        self.overfetch = overfetch
        self.identity = getattr(searcher, "identity", None)
        self.queries = 0  # query rows sent to the searcher (a row searched again deeper counts again)

    def embed_chunks(self, chunks: np.ndarray) -> np.ndarray:
        """int64[n, m] token chunks -> float32[n, d] (pad tokens are dropped before decoding)."""
        texts = [self.decode([int(t) for t in row if t != self.pad_id]) for row in chunks]
        return self.embedder.embed(texts, batch_size=self.embed_batch_size)

    def search_ids(self, q: np.ndarray, query_docs: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """float32[n, d] queries -> (scores float32[n, k], chunk ids int64[n, k]), -1 = none.

        With ``query_docs`` (int64[n]) chunks of the same document are skipped: the search is
        repeated with a doubled depth for the rows that lost too many results.
        """
        n, k = q.shape[0], self.k
        out_s = np.full((n, k), -np.inf, dtype=np.float32)
        out_i = np.full((n, k), -1, dtype=np.int64)
        todo = np.arange(n)
        total = int(self.searcher.ntotal)
        depth = k if query_docs is None else k + self.overfetch
        while todo.size:
            depth = max(1, min(depth, total)) if total else k
            scores, ids = self.searcher.search(q[todo], depth)  # [t, depth]
            self.queries += len(todo)
            keep = ids >= 0
            if query_docs is not None:
                docs = np.where(keep, self.store.doc_ids(np.maximum(ids, 0)), -1)
                keep &= docs != query_docs[todo][:, None]
            rank = np.cumsum(keep, axis=1) - 1       # position among kept results
            sel = keep & (rank < k)
            rows, cols = np.nonzero(sel)
            out_s[todo[rows], rank[rows, cols]] = scores[rows, cols]
            out_i[todo[rows], rank[rows, cols]] = ids[rows, cols]
            # rows short of k results while the search could still go deeper
            short = (keep.sum(axis=1) < k) & (depth < total) & (ids[:, -1] >= 0)
            todo = todo[short]
            depth *= 2
        return out_s, out_i

    def neighbour_ids(self, chunks, doc_ids) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32[bs, l, k], chunk ids int64[bs, l, k]) for a batch of chunks."""
        chunks, doc_ids = check_chunks(chunks, doc_ids)
        bs, l, m = chunks.shape
        q = self.embed_chunks(chunks.reshape(bs * l, m))                       # [bs*l, d]
        query_docs = np.repeat(doc_ids, l) if self.exclude_same_doc else None  # [bs*l]
        scores, ids = self.search_ids(q, query_docs)                           # [bs*l, k]
        return scores.reshape(bs, l, self.k), ids.reshape(bs, l, self.k)

    def neighbours(self, chunks, doc_ids) -> np.ndarray:
        _, ids = self.neighbour_ids(chunks, doc_ids)
        return self.store.neighbours(ids)  # [bs, l, k, r]

    def close(self) -> None:
        close = getattr(self.searcher, "close", None)
        if close is not None:
            close()
