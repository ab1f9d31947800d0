"""RETRO pretraining samples: GPT samples of ns tokens plus the k neighbours of each chunk.

Notation: ns sequence (a multiple of m), m chunk length, l = ns / m, k neighbours, r neighbour
length.  Item = GPT item + ``neighbours`` int64 [l, k, r].

The retrieval database holds the *training* documents only (chunk store + faiss index built once
under the data directory), so held-out samples can never retrieve their own text.  Neighbours
come from a ``NeighbourSource`` (``megatron_retro.retrieval``); every chunk is queried with the
id of the document owning the chunk's last token, so the same-document rule also holds for
samples spanning several documents (a chunk never retrieves the text that follows it).
Neighbours are fetched by ``training.neighbour_feed`` (ahead of time, once per sample, by one
rank per model-parallel group), not by the dataset.
"""
from __future__ import annotations

import os

import numpy as np

from megatron_retro.config import RunConfig


def chunk_documents(tokens: np.ndarray, sample_docs: np.ndarray, eod: int, m: int) -> np.ndarray:
    """Document id of the last token of each chunk of ``tokens`` [ns] -> int64 [ns / m].

    ``sample_docs`` lists the documents the sample spans, in order; every document ends with eod.
    """
    boundaries = np.concatenate([[0], np.cumsum(tokens[:-1] == eod)])  # docs finished before t
    per_token = sample_docs[np.minimum(boundaries, len(sample_docs) - 1)]
    return per_token[m - 1::m].astype(np.int64)


class RetroSamples:
    """Map-style dataset: a megatron GPTDataset's items, and the chunk queries of any samples.

    Neighbours are not fetched here: ``training.neighbour_feed`` asks for them, ahead of time,
    for exactly the samples a DP rank trains on.
    """

    def __init__(self, gpt_dataset, chunk_length: int, eod: int):
        self.ds = gpt_dataset
        self.m = chunk_length
        self.eod = eod

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return self.ds[i]

    def queries(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(chunks int64[n, l, m], document of each chunk int64[n, l]) of samples ``indices``."""
        chunks, docs = [], []
        for i in indices:
            tokens = np.asarray(self.ds[i]["tokens"])
            if len(tokens) % self.m:
                raise ValueError(f"RETRO sample of {len(tokens)} tokens: not a multiple of chunk_length={self.m}")
            _, sample_docs = self.ds._query_document_sample_shuffle_indices(i)
            chunks.append(tokens.reshape(-1, self.m).astype(np.int64))
            docs.append(chunk_documents(tokens, np.asarray(sample_docs), self.eod, self.m))
        return np.stack(chunks), np.stack(docs)


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
    """The run's ``NeighbourSource`` over its retrieval database ``out`` (any retrieval.mode)."""
    from megatron_retro.retrieval.sources import open_neighbour_source

    return open_neighbour_source(retrieval_config(cfg, out), decode=tokenizer.decode, rank=rank)


def retrieval_config(cfg: RunConfig, out: str):
    """``cfg.retrieval`` with the unset fields filled from the RETRO run and its database ``out``."""
    from megatron_retro.retrieval.sources import resolve

    retro = cfg.retro
    # the run's own index pins the build a service must serve
    return resolve(cfg.retrieval, store=os.path.join(out, "store"), index_dir=os.path.join(out, "index"),
                   precomputed=os.path.join(out, "precomputed"), embedder=retro.embedder,
                   k=retro.num_neighbours, exclude_same_doc=retro.exclude_same_doc)


def build_retro_pretrain_data(cfg: RunConfig, dp: int = 1, dp_rank: int = 0):
    """PretrainData whose micro-batches carry neighbours; builds the retrieval DB if missing.

    Only the first rank of each model-parallel group opens a neighbour source (one client per
    DP rank); the feed broadcasts its neighbours to the rest of the group.
    """
    from megatron_retro.training.data_setup import prepare_gpt_datasets, rank0_first
    from megatron_retro.training.neighbour_feed import RetroFeed, is_feeder
    from megatron_retro.training.data_setup import PretrainData

    from megatron_retro.errors import UserError

    if cfg.data.copy_share > 0:
        raise UserError(f"data.copy_share={cfg.data.copy_share}: GPT pretraining only (RETRO samples need "
                        f"neighbours); set it on the GPT a RETRO is retro-fitted from")
    data, tokenizer, train_ds, valid_ds = prepare_gpt_datasets(cfg, dp)
    out = retrieval_dir(cfg, os.path.dirname(os.path.abspath(data.prefix)))
    rank0_first(lambda: ensure_retro_db(cfg, data.prefix, tokenizer, train_ds.indices, out))
    source = open_source(cfg, out, tokenizer, rank=dp_rank) if is_feeder() else None
    m = cfg.retro.chunk_length
    train, valid = RetroSamples(train_ds, m, tokenizer.eod), RetroSamples(valid_ds, m, tokenizer.eod)
    feed = RetroFeed(cfg, train, valid, source, dp=dp, dp_rank=dp_rank)
    return PretrainData(train=train, valid=valid, vocab_size=tokenizer.vocab_size, feed=feed)
