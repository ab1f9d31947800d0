"""A retrieval database built from documents of an indexed corpus: chunk store + faiss shards.

Used by RETRO pretraining (the training documents only, so held-out text never retrieves
itself) and by QA fine-tuning / evaluation (every document of the task corpus).  Built once: an
existing index directory is reused; both steps write to temporary names and rename.
"""
from __future__ import annotations

import os
from typing import Iterable

import numpy as np


def ensure_retrieval_db(prefix: str, tokenizer, doc_ids: Iterable[int], out: str, chunk_length: int,
                        neighbour_length: int, embedder: str, num_shards: int = 1) -> tuple[str, str]:
    """(store dir, index dir) under ``out``, built from documents ``doc_ids`` of ``prefix`` if missing."""
    from megatron_retro.data.indexed import open_indexed
    from megatron_retro.retrieval.build import build_index
    from megatron_retro.retrieval.chunk_store import build_chunk_store

    store_dir, index_dir = os.path.join(out, "store"), os.path.join(out, "index")
    if os.path.isdir(index_dir):
        return store_dir, index_dir
    docs = sorted(int(d) for d in doc_ids)
    if not os.path.isdir(store_dir):
        indexed = open_indexed(prefix)  # copy: views of its mmap die with it
        tokens = [np.array(indexed[d], dtype=np.int64) for d in docs]
        build_chunk_store(zip(docs, tokens), store_dir, tokenizer.decode, chunk_length=chunk_length,
                          neighbour_length=neighbour_length, pad_id=tokenizer.pad)
    tmp = index_dir + ".tmp"
    if os.path.isdir(tmp):
        import shutil

        shutil.rmtree(tmp)  # a killed build's leftovers
    build_index(store_dir, tmp, embedder=embedder, factory="flat", num_shards=num_shards)
    os.replace(tmp, index_dir)
    return store_dir, index_dir
