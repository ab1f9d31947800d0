"""Chunk store: tokenized documents cut into fixed-length chunks, memory-mapped on disk.

Notation: ``m`` chunk length (64), ``r`` neighbour length (chunk + continuation, 128),
``C`` number of chunks, ``T`` number of stored tokens.

Layout of a store directory (written into a temporary sibling, then renamed: a store is
either complete or absent)::

    meta.json              m, r, pad_id, counts, format version, digest (see build_id.py)
    tokens.npy             int32[T]   every document's tokens, documents back to back
    chunk_start.npy        int64[C]   offset of each chunk's first token in tokens.npy
    chunk_doc.npy          int64[C]   document id of each chunk
    doc_end.npy            int64[C]   offset one past the last token of the chunk's document
    chunk_text.bin         utf-8      decoded text of every chunk, back to back (for the embedder)
    chunk_text_offsets.npy int64[C+1] byte offsets of each chunk's text in chunk_text.bin

A chunk is ``m`` consecutive tokens of one document (the last chunk of a document may be
shorter and is padded with ``pad_id``).  A *neighbour* is the chunk followed by its
continuation in the same document, ``r`` tokens in all, padded with ``pad_id`` where the
document ends.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from megatron_retro.errors import UserError
from megatron_retro.io_atomic import atomic_dir
from megatron_retro.retrieval.build_id import compute_store_digest

FORMAT_VERSION = 1
_ARRAYS = ("tokens", "chunk_start", "chunk_doc", "doc_end")


class ChunkStore:
    """Read-only view of a chunk store directory (arrays are memory-mapped, not loaded)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise UserError(f"{self.path}: not a chunk store (missing meta.json)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{meta_file}: format_version={meta.get('format_version')}, "
                            f"expected {FORMAT_VERSION}")
        self.meta = meta
        self.chunk_length: int = int(meta["chunk_length"])        # m
        self.neighbour_length: int = int(meta["neighbour_length"])  # r
        self.pad_id: int = int(meta["pad_id"])
        arrays = {name: np.load(self.path / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        self.tokens = arrays["tokens"]            # int32[T]
        self.chunk_start = arrays["chunk_start"]  # int64[C]
        self.chunk_doc = arrays["chunk_doc"]      # int64[C]
        self.doc_end = arrays["doc_end"]          # int64[C]
        self._text_offsets = np.load(self.path / "chunk_text_offsets.npy", mmap_mode="r")
        self._text = np.memmap(self.path / "chunk_text.bin", dtype=np.uint8, mode="r") \
            if self._text_offsets[-1] > 0 else np.zeros(0, np.uint8)
        if len(self.chunk_start) != int(meta["num_chunks"]):
            raise UserError(f"{self.path}: chunk_start.npy has {len(self.chunk_start)} rows, "
                            f"meta.json says num_chunks={meta['num_chunks']}")

    def __len__(self) -> int:
        return len(self.chunk_start)

    @property
    def digest(self) -> str:
        """sha256 (16 hex) of the store's content, recorded at build (computed for older stores)."""
        if not self.meta.get("digest"):
            self.meta["digest"] = compute_store_digest(self.path, self.meta)
        return self.meta["digest"]

    @property
    def num_docs(self) -> int:
        return int(self.meta["num_docs"])

    def _window(self, ids: np.ndarray, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` of each chunk, cut at its document's end, padded."""
        ids = np.asarray(ids, dtype=np.int64)
        flat = ids.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"chunk id out of range [0, {len(self)}): min {flat.min()}, max {flat.max()}")
        start = np.asarray(self.chunk_start[flat])[:, None]           # [n, 1]
        end = np.asarray(self.doc_end[flat])[:, None]                 # [n, 1]
        pos = start + np.arange(length, dtype=np.int64)[None, :]      # [n, length]
        valid = pos < end
        out = np.full(pos.shape, self.pad_id, dtype=np.int64)
        if len(self.tokens):
            out[valid] = self.tokens[np.minimum(pos, len(self.tokens) - 1)][valid]
        return out.reshape(ids.shape + (length,))

    def chunks(self, ids) -> np.ndarray:
        """int64[..., m]: the chunks with these ids (short last chunks padded)."""
        ids = np.asarray(ids, dtype=np.int64)
        # A chunk never runs past the next chunk start of its own document, by construction.
        return self._window(ids, self.chunk_length)

    def neighbours(self, ids) -> np.ndarray:
        """int64[..., r]: chunk + continuation for these ids; ids < 0 give all-pad rows."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full(ids.shape + (self.neighbour_length,), self.pad_id, dtype=np.int64)
        ok = ids >= 0
        if ok.any():
            out[ok] = self._window(ids[ok], self.neighbour_length)
        return out

    def doc_ids(self, ids) -> np.ndarray:
        """int64[...]: document id of each chunk id."""
        return np.asarray(self.chunk_doc[np.asarray(ids, dtype=np.int64)])

    def text(self, i: int) -> str:
        lo, hi = int(self._text_offsets[i]), int(self._text_offsets[i + 1])
        return bytes(self._text[lo:hi]).decode("utf-8")

    def texts(self, start: int = 0, stop: int | None = None) -> list[str]:
        stop = len(self) if stop is None else stop
        return [self.text(i) for i in range(start, stop)]


def build_chunk_store(
    documents: Iterable[tuple[int, Sequence[int]]],
    out_dir: str | os.PathLike,
    decode: Callable[[list[int]], str],
    *,
    chunk_length: int = 64,
    neighbour_length: int = 128,
    pad_id: int = 0,
    overwrite: bool = False,
) -> ChunkStore:
    """Cut ``(doc_id, token_ids)`` documents into chunks and write a store atomically.

    ``decode`` turns a chunk's token ids into the text the embedder sees.  Empty documents are
    skipped.  Returns the opened store.
    """
    if chunk_length < 1:
        raise UserError(f"chunk_length={chunk_length}: must be >= 1")
    if neighbour_length < chunk_length:
        raise UserError(f"neighbour_length={neighbour_length}: must be >= chunk_length={chunk_length}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (pass overwrite=True to replace it)")
    with atomic_dir(out) as tmp:
        token_parts, starts, docs, ends, text_lens = [], [], [], [], []
        seen_docs: set[int] = set()
        offset = 0
        with open(tmp / "chunk_text.bin", "wb") as text_file:
            for n, (doc_id, token_ids) in enumerate(documents):
                doc_id = int(doc_id)
                if doc_id in seen_docs:
                    raise UserError(f"document #{n}: duplicate doc_id {doc_id}")
                seen_docs.add(doc_id)
                toks = np.asarray(token_ids, dtype=np.int64)
                if toks.ndim != 1:
                    raise UserError(f"document #{n} (doc_id {doc_id}): token_ids must be 1-D")
                if toks.size == 0:
                    continue
                if toks.min() < 0 or toks.max() > np.iinfo(np.int32).max:
                    raise UserError(f"document #{n} (doc_id {doc_id}): token ids must be in [0, 2^31)")
                end = offset + toks.size
                for s in range(0, toks.size, chunk_length):
                    starts.append(offset + s)
                    docs.append(doc_id)
                    ends.append(end)
                    data = decode([int(t) for t in toks[s:s + chunk_length]]).encode("utf-8")
                    text_file.write(data)
                    text_lens.append(len(data))
                token_parts.append(toks.astype(np.int32))
                offset = end
        if not starts:
            raise UserError(f"{out}: nothing to store: no document has any tokens "
                            f"({len(seen_docs)} documents given)")
        tokens = np.concatenate(token_parts)
        np.save(tmp / "tokens.npy", tokens)
        np.save(tmp / "chunk_start.npy", np.asarray(starts, dtype=np.int64))
        np.save(tmp / "chunk_doc.npy", np.asarray(docs, dtype=np.int64))
        np.save(tmp / "doc_end.npy", np.asarray(ends, dtype=np.int64))
        np.save(tmp / "chunk_text_offsets.npy",
                np.concatenate([[0], np.cumsum(np.asarray(text_lens, dtype=np.int64))]).astype(np.int64))
        meta = {"format_version": FORMAT_VERSION, "chunk_length": chunk_length,
                "neighbour_length": neighbour_length, "pad_id": int(pad_id),
                "num_chunks": len(starts), "num_docs": len(token_parts), "num_tokens": int(offset)}
        meta["digest"] = compute_store_digest(tmp, meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return ChunkStore(out)
