"""The build identity of a retrieval database, and the one check every consumer makes first.

A retrieval database is made of a chunk store and an index built from its embeddings.  Its
*build identity* names what made it::

    embedder          canonical embedder name ("all-MiniLM-L6-v2", "hash:32:0", a model path)
    dim               embedding width d
    chunk_length      m, tokens per chunk
    neighbour_length  r, tokens per neighbour (chunk + continuation)
    store_digest      sha256 (16 hex) of the chunk store's token arrays and layout
    index_build       the index build's id (a uuid written once into manifest.json)

The index directory's ``manifest.json`` holds it under ``"identity"``; every shard server
reports it through the ``Info`` RPC; precomputed neighbours record the identity of the source
they were computed from.  A consumer (``open_neighbour_source``: RETRO pretraining, QA
fine-tuning, evaluation) builds the identity it *expects* from its own configuration and chunk
store and calls :func:`check_build` before any training step: a mismatch is one ``UserError``
line naming both builds.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

from megatron_retro.errors import UserError

#: the chunk store files whose bytes define its content (see chunk_store.py)
STORE_ARRAYS = ("tokens.npy", "chunk_start.npy", "chunk_doc.npy", "doc_end.npy")
#: the layout fields of a chunk store's meta.json that enter its digest
STORE_LAYOUT = ("format_version", "chunk_length", "neighbour_length", "pad_id", "num_chunks", "num_docs")


@dataclass(frozen=True)
class BuildIdentity:
    """What built a retrieval database (see the module docstring); "" / 0 = not known."""

    embedder: str
    dim: int
    chunk_length: int
    neighbour_length: int
    store_digest: str
    index_build: str = ""

    def describe(self) -> str:
        """One short line: ``embedder=... d=.. m=.. r=.. store=<12 hex> index=<8 hex>``."""
        return (f"embedder={self.embedder or '?'} d={self.dim or '?'} m={self.chunk_length or '?'} "
                f"r={self.neighbour_length or '?'} store={self.store_digest[:12] or '?'} "
                f"index={self.index_build[:8] or '?'}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BuildIdentity":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def differences(self, served: "BuildIdentity") -> list[str]:
        """Names of the fields where ``served`` differs from this (expected) identity.

        An expected ``index_build`` of "" pins no particular index build (any build of the same
        embedder, store and chunking is accepted); every other field must match exactly.
        """
        out = []
        for f in fields(self):
            want, got = getattr(self, f.name), getattr(served, f.name)
            if f.name == "index_build" and not want:
                continue
            if want != got:
                out.append(f.name)
        return out


def canonical_embedder(spec: str) -> str:
    """The name an embedder spec builds: ``minilm`` -> all-MiniLM-L6-v2, ``hash:32`` -> hash:32:0."""
    if spec in ("minilm", "all-MiniLM-L6-v2"):
        return "all-MiniLM-L6-v2"
    if spec.startswith("hash:"):
        parts = spec.split(":")
        return f"hash:{parts[1]}:{parts[2] if len(parts) > 2 else 0}"
    return spec


def compute_store_digest(store_dir: str | os.PathLike, meta: Optional[dict] = None) -> str:
    """sha256 (16 hex) over a chunk store's layout fields and token/offset arrays."""
    path = Path(store_dir)
    if meta is None:
        meta = json.loads((path / "meta.json").read_text())
    h = hashlib.sha256(json.dumps({k: meta.get(k) for k in STORE_LAYOUT}, sort_keys=True).encode())
    for name in STORE_ARRAYS:
        with open(path / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def store_digest(store_dir: str | os.PathLike) -> str:
    """The digest recorded in the store's meta.json (stores written before it existed: computed)."""
    meta = json.loads((Path(store_dir) / "meta.json").read_text())
    return meta.get("digest") or compute_store_digest(store_dir, meta)


def store_identity(store, embedder: str, dim: int, index_build: str = "") -> BuildIdentity:
    """The identity a database built from ``store`` (a ``ChunkStore``) with ``embedder`` has."""
    return BuildIdentity(embedder=canonical_embedder(embedder), dim=int(dim), chunk_length=store.chunk_length,
                         neighbour_length=store.neighbour_length, store_digest=store.digest,
                         index_build=index_build)


def expected_identity(store, embedder: str, dim: int, index_dir: Optional[str] = None) -> BuildIdentity:
    """The build a run expects: its embedder and chunk store, and the build of its own index
    directory when it has one (a service must then serve exactly that build)."""
    index_build = ""
    manifest = Path(index_dir) / "manifest.json" if index_dir else None
    if manifest is not None and manifest.is_file():
        index_build = json.loads(manifest.read_text())["build_id"]
    return store_identity(store, embedder, dim, index_build)


def manifest_identity(manifest: dict, where: str) -> BuildIdentity:
    """The identity recorded in an index manifest (``where`` names the directory in errors)."""
    ident = manifest.get("identity")
    if not ident:
        raise UserError(f"{where}: index has no build identity (built before identities existed or "
                        f"from raw vectors); rebuild it with `megatron-retro index build`")
    return BuildIdentity.from_dict({**ident, "index_build": manifest["build_id"]})


def check_build(expected: BuildIdentity, served: Optional[BuildIdentity], what: str) -> None:
    """Raise a one-line ``UserError`` unless ``served`` (by ``what``) is the build the run expects."""
    if served is None:
        raise UserError(f"{what}: reports no build identity; this run expects {expected.describe()} "
                        f"(rebuild the index with `megatron-retro index build`)")
    diff = expected.differences(served)
    if diff:
        raise UserError(f"{what}: serves build [{served.describe()}], this run expects "
                        f"[{expected.describe()}] (differ in {', '.join(diff)})")


def check_searcher(searcher, store, embedder: str, dim: int, index_dir: Optional[str] = None,
                   endpoints: Optional[str] = None) -> None:
    """Refuse ``searcher`` (an in-process index, or the service client when ``endpoints`` is
    given) unless it holds the build this run's store, embedder and index directory name."""
    what = f"retrieval service {endpoints}" if endpoints else f"retrieval index {index_dir}"
    check_build(expected_identity(store, embedder, dim, index_dir), getattr(searcher, "identity", None), what)
