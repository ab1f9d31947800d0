"""RETRO pretraining samples: GPT samples of ns tokens plus the k neighbours of each chunk.

Notation: ns sequence (a multiple of m), m chunk length, l = ns / m, k neighbours, r neighbour
length.  Item = GPT item + ``neighbours`` int64 [l, k, r].

The retrieval database holds the *training* documents only (chunk store + faiss index built once
under the data directory), so held-out samples can never retrieve their own text.  Neighbours
come from a ``NeighbourSource`` (``megatron_retro.retrieval``); every chunk is queried with the
id of the document owning the chunk's last token, so the same-document rule also holds for
samples spanning several documents (a chunk never retrieves the text that follows it).
Neighbours are fetched for blocks of samples at once and cached per block.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import torch

from megatron_retro.config import RunConfig


def chunk_documents(tokens: np.ndarray, sample_docs: np.ndarray, eod: int, m: int) -> np.ndarray:
    """Document id of the last token of each chunk of ``tokens`` [ns] -> int64 [ns / m].

    ``sample_docs`` lists the documents the sample spans, in order; every document ends with eod.
    """
    boundaries = np.concatenate([[0], np.cumsum(tokens[:-1] == eod)])  # docs finished before t
    per_token = sample_docs[np.minimum(boundaries, len(sample_docs) - 1)]
    return per_token[m - 1::m].astype(np.int64)


class RetroSamples:
    """Map-style dataset: a megatron GPTDataset's items with their chunks' neighbours."""

    def __init__(self, gpt_dataset, source, chunk_length: int, eod: int, block: int = 32, cache_blocks: int = 8):
        self.ds = gpt_dataset
        self.source = source
        self.m = chunk_length
        self.eod = eod
        self.block = block
        self.cache_blocks = cache_blocks
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.ds[i])
        b, j = divmod(i, self.block)
        if b not in self._cache:
            self._cache[b] = self._fetch(range(b * self.block, min((b + 1) * self.block, len(self))))
            while len(self._cache) > self.cache_blocks:
                self._cache.popitem(last=False)
        self._cache.move_to_end(b)
        item["neighbours"] = torch.from_numpy(self._cache[b][j])
        return item

    def _fetch(self, indices) -> np.ndarray:
        chunks, docs = [], []
        for i in indices:
            tokens = np.asarray(self.ds[i]["tokens"])
            if len(tokens) % self.m:
                raise ValueError(f"RETRO sample of {len(tokens)} tokens: not a multiple of chunk_length={self.m}")
            _, sample_docs = self.ds._query_document_sample_shuffle_indices(i)
            chunks.append(tokens.reshape(-1, self.m))
            docs.append(chunk_documents(tokens, np.asarray(sample_docs), self.eod, self.m))
        n, l = len(chunks), chunks[0].shape[0]
        flat = np.stack(chunks).reshape(n * l, 1, self.m)                   # every chunk its own query
        out = self.source.neighbours(flat, np.concatenate(docs))             # [n·l, 1, k, r]
        return np.ascontiguousarray(out.reshape(n, l, *out.shape[2:]).astype(np.int64))


def retrieval_dir(cfg: RunConfig, data_dir: str) -> str:
    retro = cfg.retro
    if retro.retrieval_dir:
        return retro.retrieval_dir
    tag = retro.embedder.replace(":", "")
    return os.path.join(data_dir, f"retro_db-m{retro.chunk_length}-r{retro.neighbour_length}-{tag}")


def ensure_retro_db(cfg: RunConfig, prefix: str, tokenizer, train_docs, out: str) -> None:
    """Chunk store of the training documents + a flat faiss index of their embeddings (once)."""
    from megatron_retro.training.retrieval_db import ensure_retrieval_db

    ensure_retrieval_db(prefix, tokenizer, train_docs, out, cfg.retro.chunk_length, cfg.retro.neighbour_length,
                        cfg.retro.embedder)


def open_source(cfg: RunConfig, out: str, tokenizer, rank: int = 0):
    from megatron_retro.retrieval.config import RetrievalConfig, open_neighbour_source

    service = cfg.retrieval.mode == "service"
    rcfg = RetrievalConfig(mode=cfg.retrieval.mode, store=os.path.join(out, "store"),
                           index_dir=os.path.join(out, "index"),  # service mode: pins the build
                           endpoints=cfg.retrieval.endpoints, timeout=cfg.retrieval.timeout,
                           token_file=cfg.retrieval.token_file, embedder=cfg.retro.embedder,
                           k=cfg.retro.num_neighbours, exclude_same_doc=cfg.retro.exclude_same_doc)
    return open_neighbour_source(rcfg, decode=tokenizer.decode, rank=rank)


def build_retro_pretrain_data(cfg: RunConfig, dp: int = 1, dp_rank: int = 0):
    """PretrainData whose train / valid items carry neighbours; builds the retrieval DB if missing."""
    from megatron_retro.training.data_setup import _rank0_first, prepare_gpt_datasets
    from megatron_retro.training.pretrain import PretrainData

    data, tokenizer, train_ds, valid_ds = prepare_gpt_datasets(cfg, dp)
    out = retrieval_dir(cfg, os.path.dirname(os.path.abspath(data.prefix)))
    _rank0_first(lambda: ensure_retro_db(cfg, data.prefix, tokenizer, train_ds.indices, out))
    source = open_source(cfg, out, tokenizer, rank=dp_rank)
    m = cfg.retro.chunk_length
    return PretrainData(train=RetroSamples(train_ds, source, m, tokenizer.eod),
                        valid=RetroSamples(valid_ds, source, m, tokenizer.eod), vocab_size=tokenizer.vocab_size)
