"""QA data of a fine-tuning or evaluation run: task examples, their retrieved passages, samples.

Reads top to bottom: the corpus and tokenizer (``data:``), the task's examples (``qa.task`` /
``qa.path``; the bundled benchmark by default), the retrieval database of the task corpus (the
bundled task: every document, built once under the data directory; other tasks: ``qa.retrieval_dir``
built with ``megatron-retro index build``), the top-k passages of every question — searched
through the sharded retrieval service when ``retrieval.mode=service``, else in-process; for the
long-document tasks (``qa.passages``: NarrativeQA, QASPER, QuALITY, QMSum) the top-k chunks of the
example's own document (``retrieval/own_document.py``), no index — cached per split so every run
of an experiment reads the same retrieved set, and the GPT or RETRO samples.

Retrieval is split over data-parallel ranks: the first rank of each model-parallel group asks for
its DP rank's contiguous share of the questions (one client per DP rank), and the shares are
gathered, so every question is searched once in the job.  A cached split's first N questions
serve a run asking for N (fine-tuning's held-out batch reads the experiment's valid split).

Notation: n questions, k passages, r passage length.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from megatron_retro.config import RunConfig
from megatron_retro.data.qa_prompts import QALayout, encode_answer, encode_question, prompt_question
from megatron_retro.data.tasks.example import QAExample
from megatron_retro.errors import UserError
from megatron_retro.io_atomic import atomic_file


@dataclass
class QASplit:
    """Examples of one split with their passages int64 [n, k, r] and the retrieved chunk ids [n, k]."""

    examples: List[QAExample]
    passages: np.ndarray
    chunk_ids: np.ndarray
    gold_hit: Optional[float]      # share of questions with a gold document among the passages
    retrieved_by: Optional[str] = None  # who searched them: service | local | own-document (a cache
    #                                     keeps the mode that filled it; "unknown" for an older cache)


@dataclass
class QAData:
    layout: QALayout
    tokenizer: object
    vocab_size: int
    db_dir: str                    # the corpus index's directory, or own-document passages' cache
    data: object                   # the prepared data directory (data.prepare.BundledData)
    own_document: bool = False     # passages from each example's own document (no index)


class QASamples:
    """Map-style dataset of fine-tuning items built from a split (built once, kept in memory)."""

    def __init__(self, layout: QALayout, tokenizer, split: QASplit, shuffle_seed: Optional[int] = None):
        order = np.arange(len(split.examples))
        if shuffle_seed is not None:  # task files are grouped (e.g. by entity): shuffle for SGD
            order = np.random.default_rng(shuffle_seed).permutation(order)
        self.items = [layout.sample(encode_question(tokenizer, prompt_question(split.examples[i])),
                                    encode_answer(tokenizer, split.examples[i].answers[0]), split.passages[i])
                      for i in order]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def qa_layout(cfg: RunConfig, tokenizer, virtual_tokens: int = 0) -> QALayout:
    qa = cfg.qa
    if cfg.model.arch == "retro":
        retro = cfg.retro
        if (qa.num_passages, qa.passage_length, qa.chunk_length) != \
                (retro.num_neighbours, retro.neighbour_length, retro.chunk_length):
            raise UserError(f"qa.num_passages/passage_length/chunk_length={qa.num_passages}/{qa.passage_length}/"
                            f"{qa.chunk_length}: a RETRO model reads them as its neighbours, so they must equal "
                            f"retro.num_neighbours/neighbour_length/chunk_length={retro.num_neighbours}/"
                            f"{retro.neighbour_length}/{retro.chunk_length}")
    return QALayout(arch=cfg.model.arch, seq_length=qa.seq_length or cfg.model.seq_length, answer_tokens=qa.max_answer_tokens,
                    eod=tokenizer.eod, pad=tokenizer.pad, virtual_tokens=virtual_tokens,
                    chunk_length=qa.chunk_length, bos=tokenizer.bos if getattr(tokenizer, "add_bos", False) else -1)


def reads_own_document(cfg: RunConfig) -> bool:
    """Whether the passages come from each example's own document (``qa.passages``)."""
    from megatron_retro.data.tasks.registry import has_documents

    return cfg.qa.passages == "document" or (cfg.qa.passages == "auto" and has_documents(cfg.qa.task))


def _db_dir(cfg: RunConfig, data_dir: str) -> str:
    qa = cfg.qa
    if reads_own_document(cfg):
        return os.path.join(data_dir, f"doc_passages-m{qa.chunk_length}-r{qa.passage_length}-"
                                      f"{qa.embedder.replace(':', '')}")
    if qa.retrieval_dir:
        return qa.retrieval_dir
    if qa.task != "bundled":
        raise UserError(f"qa.retrieval_dir: required for qa.task={qa.task} (build the task corpus's index with "
                        f"`megatron-retro index chunks` + `index build`)")
    return os.path.join(data_dir, f"qa_db-m{qa.chunk_length}-r{qa.passage_length}-{qa.embedder.replace(':', '')}")


def load_examples(cfg: RunConfig, split: str, limit: int, data=None) -> List[QAExample]:
    """The first ``limit`` (0 = all) examples of ``split``, with at least one answer each."""
    from megatron_retro.data.tasks import load_task

    qa = cfg.qa
    path = qa.path or (os.path.join(data.dir, "qa") if data is not None else None)
    if path is None:
        raise UserError("qa.path: required for a task other than the bundled benchmark")
    out = []
    for ex in load_task(qa.task, path, split=split):
        out.append(ex)
        if limit and len(out) >= limit:
            break
    if not out:
        raise UserError(f"qa.path={path}: no {split} examples for task {qa.task}")
    return out


def _cache_key(examples: List[QAExample], k: int, db_dir: str) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.id.encode() + b"\0" + ex.question.encode() + b"\0")
    h.update(f"k={k};db={os.path.abspath(db_dir)}".encode())
    return h.hexdigest()[:16]


def _search(cfg: RunConfig, store, index_dir: str, questions: List[str], k: int, rank: int = 0) -> np.ndarray:
    """int64 [n, k] chunk ids of the top-k chunks per question (service or in-process; ``rank``: DP rank)."""
    from megatron_retro.retrieval.build_id import check_searcher
    from megatron_retro.retrieval.sources import open_searcher
    from megatron_retro.retrieval.embedder import build_embedder

    embedder = build_embedder(cfg.qa.embedder)
    if cfg.retrieval.mode == "precomputed":
        raise UserError("retrieval.mode=precomputed: QA passages are retrieved per question and cached per split; "
                        "use local or service (precomputed neighbours are for RETRO pretraining)")
    if cfg.retrieval.mode == "service" and not cfg.retrieval.endpoints:
        raise UserError("retrieval.endpoints: required when retrieval.mode=service")
    searcher = open_searcher(cfg.retrieval, index_dir, rank=rank)  # the run's retrieval: section, as training's
    if searcher.dim != embedder.dim:
        raise UserError(f"qa.embedder={cfg.qa.embedder!r} gives dim {embedder.dim}, the index holds dim {searcher.dim}")
    check_searcher(searcher, store, cfg.qa.embedder, embedder.dim, index_dir,
                   cfg.retrieval.endpoints if cfg.retrieval.mode == "service" else None)
    try:
        q = embedder.embed(questions, batch_size=128)                   # [n, dim]
        out = np.empty((len(questions), k), dtype=np.int64)
        for start in range(0, len(questions), 256):                      # the service's batch limit
            _, ids = searcher.search(np.ascontiguousarray(q[start:start + 256], dtype=np.float32), k)
            out[start:start + 256] = ids
        return out
    finally:
        close = getattr(searcher, "close", None)
        if close:
            close()


def _cache_file(cfg: RunConfig, examples: List[QAExample], db_dir: str) -> str:
    return os.path.join(db_dir, "questions", f"{cfg.qa.task}-{_cache_key(examples, cfg.qa.num_passages, db_dir)}.npz")


def _read_cache(path: str) -> tuple[np.ndarray, str]:
    """(chunk ids int64 [n, k], the retrieval mode that searched them)."""
    with np.load(path) as f:
        return f["chunk_ids"], str(f["retrieved_by"]) if "retrieved_by" in f.files else "unknown"


def _search_shared(cfg: RunConfig, store, index_dir: str, questions: List[str], k: int) -> np.ndarray:
    """int64 [n, k]: each DP rank's feeding rank searches its share; the shares are gathered."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return _search(cfg, store, index_dir, questions, k)
    from megatron.core import parallel_state

    from megatron_retro.training.neighbour_feed import is_feeder

    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    n = len(questions)
    lo, hi = n * dp_rank // dp, n * (dp_rank + 1) // dp
    mine = (lo, _search(cfg, store, index_dir, questions[lo:hi], k, rank=dp_rank)) \
        if is_feeder() and hi > lo else None
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, mine)
    out = np.full((n, k), -1, dtype=np.int64)
    for part in parts:
        if part is not None:
            out[part[0]:part[0] + len(part[1])] = part[1]
    return out


def own_document_split(cfg: RunConfig, examples: List[QAExample], cache_dir: str, tokenizer) -> QASplit:
    """Passages of every example from its own document (cached like the index's)."""
    from megatron_retro.retrieval.embedder import build_embedder
    from megatron_retro.retrieval.own_document import OwnDocumentRetriever

    qa = cfg.qa
    for ex in examples:
        if not ex.context:
            raise UserError(f"qa.passages=document: example {ex.id} of task {qa.task} has no document to read "
                            f"(set qa.passages=index and qa.retrieval_dir)")
    cache = os.path.join(cache_dir, f"{qa.task}-{_cache_key(examples, qa.num_passages, cache_dir)}.npz")
    if os.path.isfile(cache):
        with np.load(cache) as f:
            passages, picked = f["passages"], f["chunk_ids"]
    else:
        retriever = OwnDocumentRetriever(tokenizer, build_embedder(qa.embedder), qa.num_passages, qa.chunk_length,
                                         qa.passage_length, tokenizer.pad)
        passages, picked = retriever.retrieve([ex.question for ex in examples], [ex.context for ex in examples])
        os.makedirs(cache_dir, exist_ok=True)
        atomic_file(cache, lambda tmp: np.savez(tmp, passages=passages, chunk_ids=picked), suffix=".npz")
    return QASplit(examples=examples, passages=passages, chunk_ids=picked, gold_hit=None, retrieved_by="own-document")


def retrieve_split(cfg: RunConfig, examples: List[QAExample], db_dir: str,
                   full: Optional[List[QAExample]] = None) -> QASplit:
    """Collective: passages of every example, from a cache or retrieved (split over DP ranks) and cached.

    ``full``: the whole split ``examples`` is the start of; its cache, when present, serves.
    """
    import torch.distributed as dist

    from megatron_retro.retrieval.chunk_store import ChunkStore

    k = cfg.qa.num_passages
    store = ChunkStore(os.path.join(db_dir, "store"))
    cache = _cache_file(cfg, examples, db_dir)
    full_cache = _cache_file(cfg, full, db_dir) if full is not None and len(full) > len(examples) else None
    found = [next((p for p in (cache, full_cache) if p and os.path.isfile(p)), None)]
    if dist.is_initialized():
        dist.broadcast_object_list(found, src=0)  # one decision for the job: all search, or none
    if found[0] is not None:
        chunk_ids, retrieved_by = _read_cache(found[0])
        chunk_ids = chunk_ids[:len(examples)]
    else:
        chunk_ids = _search_shared(cfg, store, os.path.join(db_dir, "index"), [ex.question for ex in examples], k)
        retrieved_by = cfg.retrieval.mode
        if not dist.is_initialized() or dist.get_rank() == 0:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            atomic_file(cache, lambda tmp: np.savez(tmp, chunk_ids=chunk_ids, retrieved_by=np.array(retrieved_by)), suffix=".npz")
    passages = store.neighbours(chunk_ids)                               # [n, k, r]
    if passages.shape[-1] != cfg.qa.passage_length:
        raise UserError(f"{db_dir}: passages of {passages.shape[-1]} tokens, qa.passage_length={cfg.qa.passage_length}")
    gold_hit = None
    golds = [ex.meta.get("gold_doc_ids") for ex in examples]
    if all(golds):
        docs = store.doc_ids(chunk_ids)                                  # [n, k]
        gold_hit = float(np.mean([bool(set(d.tolist()) & set(g)) for d, g in zip(docs, golds)]))
    return QASplit(examples=examples, passages=passages, chunk_ids=chunk_ids, gold_hit=gold_hit,
                   retrieved_by=retrieved_by)


def prepare_qa(cfg: RunConfig, virtual_tokens: int = 0, num_shards: int = 1) -> QAData:
    """Collective (rank 0 first): data dir, tokenizer, the task corpus's retrieval DB, the layout."""
    from megatron_retro.data.indexed import open_indexed
    from megatron_retro.data.prepare import resolve_data
    from megatron_retro.data.tokenizer import load_tokenizer
    from megatron_retro.training.data_setup import rank0_first
    from megatron_retro.training.retrieval_db import ensure_retrieval_db

    data = rank0_first(lambda: resolve_data(cfg.data))
    tokenizer = load_tokenizer(data.tokenizer)
    db_dir = _db_dir(cfg, os.path.dirname(data.prefix))  # data.dir, or its tok-* dir for a model's own tokenizer
    own = reads_own_document(cfg)
    if not cfg.qa.retrieval_dir and not own:
        qa = cfg.qa
        # every article of the corpus; reading-practice documents (before first_article) left out
        rank0_first(lambda: ensure_retrieval_db(data.prefix, tokenizer,
                                                 range(data.first_article, len(open_indexed(data.prefix))),
                                                 db_dir, qa.chunk_length, qa.passage_length, qa.embedder,
                                                 num_shards=num_shards))
    layout = qa_layout(cfg, tokenizer, virtual_tokens)
    return QAData(layout=layout, tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, db_dir=db_dir, data=data,
                  own_document=own)


def load_split(cfg: RunConfig, qa_data: QAData, split: str, limit: int) -> QASplit:
    """Collective: the first ``limit`` (0 = all) examples of one split and their passages."""
    full = load_examples(cfg, split, 0, qa_data.data)
    examples = full[:limit] if limit else full
    if qa_data.own_document:
        from megatron_retro.training.data_setup import rank0_first

        return rank0_first(lambda: own_document_split(cfg, examples, qa_data.db_dir, qa_data.tokenizer))
    return retrieve_split(cfg, examples, qa_data.db_dir, full=full)


def describe(split: QASplit) -> dict:
    return {"examples": len(split.examples), "gold_passage_retrieved": split.gold_hit,
            "retrieved_by": split.retrieved_by}

