"""Retrieval quality on a QA benchmark: question -> gold passage (Hit@k, Recall@k, MRR, NDCG@k).

Notation: ``n`` questions, ``k`` results per question, ``C`` chunks in the store.

Relevance: a chunk is relevant to a question when its document is one of the question's gold
documents (``gold_doc_ids`` of the bundled ``qa/{train,valid,test}.jsonl``).  With
``relevance="answer"`` it must also contain one of the question's answers (case-insensitive),
i.e. be an answer-bearing passage of a gold document.

Public API (what [finetune-eval] calls to put passages into prompts):

* ``retrieve_passages(retriever, questions, k) -> int64[n, k]`` chunk ids, best first, -1 where
  the retriever found fewer than k; any retriever of ``hybrid`` works (``DenseRetriever``,
  ``BM25Retriever``, ``HybridRetriever``, ``RerankedRetriever``); ``store.text(id)`` gives a
  passage's text, ``store.neighbours(ids)`` its tokens with the continuation.
* ``open_qa_retriever(kind, index_dir, ...)`` builds one of ``dense | bm25 | hybrid | rerank``
  over an index directory (the chunk store and embedder recorded in its manifest);
  ``open_qa_retrievers(kinds, ...)`` several of them sharing one embedder and BM25 index.
* ``gold_chunks(store, gold_doc_ids, answers=None)`` and
  ``evaluate_qa(retriever, store, questions, gold_doc_ids, ks, answers=None)`` -> metrics dict.

``small2big`` (sentence units searched with the index's embedder, their enclosing chunks returned)
and ``multiquery`` (the question + rule-based rewrites, dense, fused by RRF) are in ``variants``.

CLI: ``megatron-retro index eval-qa --index DIR --qa FILE --retriever dense,bm25,hybrid,rerank,small2big,multiquery``.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from megatron_retro.errors import UserError
from megatron_retro.retrieval.metrics import retrieval_metrics

RETRIEVERS = ("dense", "bm25", "hybrid", "rerank", "small2big", "multiquery")


def retrieve_passages(retriever, questions: Sequence[str], k: int, batch_size: int = 256) -> np.ndarray:
    """int64[n, k]: chunk ids of the top-k passages per question, best first (-1 = none)."""
    if k < 1:
        raise UserError(f"retrieve_passages: k={k}, must be >= 1")
    questions = list(questions)
    for i, q in enumerate(questions):
        if not isinstance(q, str):
            raise UserError(f"retrieve_passages: questions[{i}] is {type(q).__name__}, expected str")
    parts = [np.zeros((0, k), np.int64)]
    for lo in range(0, len(questions), batch_size):
        _, ids = retriever.search(questions[lo:lo + batch_size], k)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (len(questions[lo:lo + batch_size]), k):
            raise UserError(f"{type(retriever).__name__}.search returned ids of shape {ids.shape}, "
                            f"expected {(len(questions[lo:lo + batch_size]), k)}")
        parts.append(ids)
    return np.ascontiguousarray(np.concatenate(parts))


def chunks_by_doc(store) -> dict:
    """{document id: int64[chunks of that document]} for every document of the store."""
    docs = np.asarray(store.chunk_doc)                      # [C]
    order = np.argsort(docs, kind="stable")
    uniq, starts = np.unique(docs[order], return_index=True)
    bounds = np.append(starts, len(order))
    return {int(d): order[bounds[j]:bounds[j + 1]] for j, d in enumerate(uniq)}


def gold_chunks(store, gold_doc_ids: Sequence[Sequence[int]],
                answers: Optional[Sequence[Sequence[str]]] = None) -> list:
    """Relevant chunk ids per question: chunks of its gold documents (containing an answer when
    ``answers`` is given)."""
    by_doc = chunks_by_doc(store)
    out = []
    for qi, docs in enumerate(gold_doc_ids):
        ids = [int(c) for d in docs for c in by_doc.get(int(d), ())]
        if answers is not None:
            needles = [a.lower() for a in answers[qi] if a.strip()]
            ids = [c for c in ids if any(a in store.text(c).lower() for a in needles)]
        out.append(set(ids))
    return out


def evaluate_qa(retriever, store, questions: Sequence[str], gold_doc_ids: Sequence[Sequence[int]],
                ks: Sequence[int] = (1, 5, 10), answers: Optional[Sequence[Sequence[str]]] = None) -> dict:
    """Metrics of ``retriever`` on the questions, against the chunks of their gold documents.

    Returns ``hit@k``, ``recall@k``, ``ndcg@k`` for each k, ``mrr`` (first relevant chunk in the
    top max(ks)), ``questions``, ``questions_without_gold`` (no relevant chunk in the store:
    they score 0) and ``seconds``.
    """
    if len(questions) != len(gold_doc_ids) or (answers is not None and len(answers) != len(questions)):
        raise UserError(f"evaluate_qa: {len(questions)} questions but {len(gold_doc_ids)} gold sets"
                        + (f" and {len(answers)} answer lists" if answers is not None else ""))
    if not questions:
        raise UserError("evaluate_qa: no questions")
    if not ks or min(ks) < 1:
        raise UserError(f"evaluate_qa: ks={list(ks)}, need at least one k >= 1")
    gold = gold_chunks(store, gold_doc_ids, answers)
    missing = sum(not g for g in gold)
    if missing == len(gold):
        raise UserError(f"evaluate_qa: none of the {len(gold)} questions has a relevant chunk in the store "
                        f"{getattr(store, 'path', '')} (built from other documents?)")
    t0 = time.perf_counter()
    ranked = retrieve_passages(retriever, questions, max(ks))               # [n, K]
    seconds = time.perf_counter() - t0
    out = retrieval_metrics(ranked, gold, ks)
    out["mrr"] = float(out["mrr"])
    out.update(questions=len(questions), questions_without_gold=missing, seconds=round(seconds, 3))
    return out


def open_qa_retrievers(kinds: Sequence[str], index_dir: Optional[str] = None, store=None, embedder=None,
                       nprobe: Optional[int] = None, depth: int = 50, candidates: int = 50,
                       reranker: str = "bm25") -> dict:
    """``{kind: retriever}`` for ``dense | bm25 | hybrid | rerank | small2big | multiquery`` over one chunk store, sharing
    one embedder, one index and one BM25 index between them.

    ``store``: a ``ChunkStore`` (default: the one recorded in the index manifest); ``embedder``:
    an ``Embedder`` or spec (default: the manifest's); ``depth``: results each side contributes
    to hybrid RRF; ``candidates``: dense results the re-ranker re-orders; ``reranker``: ``bm25``
    (lexical scores of the dense candidates), ``cross-encoder:<path>`` (a sentence-transformers
    CrossEncoder) or an embedder spec (cosine under another bi-encoder).
    """
    from megatron_retro.retrieval import hybrid, variants

    for kind in kinds:
        if kind not in RETRIEVERS:
            raise UserError(f"retriever {kind!r}: choose one of {', '.join(RETRIEVERS)}")
    store = store if store is not None else manifest_store(index_dir)
    needs_bm25 = any(k in ("bm25", "hybrid") for k in kinds) or ("rerank" in kinds and reranker == "bm25")
    bm25 = hybrid.BM25Retriever.from_store(store) if needs_bm25 else None
    dense = _dense(index_dir, store, embedder, nprobe) if set(kinds) - {"bm25"} else None
    out = {}
    for kind in kinds:
        if kind == "bm25":
            out[kind] = bm25
        elif kind == "dense":
            out[kind] = dense
        elif kind == "hybrid":
            out[kind] = hybrid.HybridRetriever([dense, bm25], depth=depth)
        elif kind == "rerank":
            out[kind] = hybrid.RerankedRetriever(dense, build_reranker(reranker, store, bm25), candidates=candidates)
        elif kind == "small2big":
            out[kind] = variants.SmallToBigRetriever(dense.embedder, store)
        else:
            out[kind] = variants.MultiQueryRetriever(dense, depth=depth)
    return out


def evaluate_qa_retrievers(kinds: Sequence[str], index_dir: Optional[str], questions: Sequence[str],
                           gold_doc_ids: Sequence[Sequence[int]], ks: Sequence[int] = (1, 5, 10),
                           answers: Optional[Sequence[Sequence[str]]] = None, store=None, embedder=None,
                           on_result=None, **options) -> dict:
    """``{name: evaluate_qa result}`` for each retriever kind (``options``: of ``open_qa_retrievers``);
    ``on_result(name, result)`` is called as each one finishes."""
    store = store if store is not None else manifest_store(index_dir)
    retrievers = open_qa_retrievers(kinds, index_dir, store, embedder, **options)
    results = {}
    for kind, retriever in retrievers.items():
        name = kind
        if kind == "rerank":
            name = f"dense + {options.get('reranker', 'bm25')} re-rank (top {options.get('candidates', 50)})"
        elif kind in ("small2big", "multiquery"):
            name = {"small2big": "small-to-big (sentences -> chunk)", "multiquery": "multi-query fusion (dense, RRF)"}[kind]
        results[name] = evaluate_qa(retriever, store, questions, gold_doc_ids, ks, answers)
        if on_result is not None:
            on_result(name, results[name])
    return results


def open_qa_retriever(kind: str, index_dir: Optional[str] = None, **kwargs):
    """One retriever of ``open_qa_retrievers``."""
    return open_qa_retrievers([kind], index_dir, **kwargs)[kind]


def build_reranker(spec: str, store, bm25=None):
    """``bm25`` | ``cross-encoder:<path>`` | an embedder spec -> a re-ranker callable."""
    from megatron_retro.retrieval import hybrid
    from megatron_retro.retrieval.embedder import build_embedder

    if spec == "bm25":
        return (bm25 or hybrid.BM25Retriever.from_store(store)).score
    if spec.startswith("cross-encoder:"):
        return hybrid.CrossEncoderReranker(spec.split(":", 1)[1], store)
    return hybrid.EmbeddingReranker(build_embedder(spec), store)


def manifest_store(index_dir: Optional[str]):
    from megatron_retro.retrieval.chunk_store import ChunkStore
    from megatron_retro.retrieval.sharding import load_manifest

    if index_dir is None:
        raise UserError("pass an index directory or a chunk store")
    manifest = load_manifest(index_dir)
    if not manifest.get("store"):
        raise UserError(f"{index_dir}/manifest.json: records no chunk store; pass --store")
    return ChunkStore(manifest["store"])


def _dense(index_dir: Optional[str], store, embedder, nprobe: Optional[int]):
    from megatron_retro.retrieval.build import ShardedLocalIndex
    from megatron_retro.retrieval.embedder import build_embedder
    from megatron_retro.retrieval.hybrid import DenseRetriever
    from megatron_retro.retrieval.sharding import load_manifest

    if index_dir is None:
        raise UserError("dense retrieval needs an index directory (--index)")
    manifest = load_manifest(index_dir)
    if embedder is None or isinstance(embedder, str):
        spec = embedder or manifest.get("embedder")
        if not spec:
            raise UserError(f"{index_dir}/manifest.json: records no embedder; pass --embedder")
        embedder = build_embedder(spec)
    if int(manifest["ntotal"]) != len(store):
        raise UserError(f"{index_dir}: the index holds {manifest['ntotal']} vectors but the chunk store "
                        f"{store.path} has {len(store)} chunks (built from another store?)")
    searcher = ShardedLocalIndex(index_dir, nprobe=nprobe)
    if searcher.dim != embedder.dim:
        raise UserError(f"embedder {embedder.name!r} gives dim {embedder.dim}, the index {index_dir} holds "
                        f"dim {searcher.dim}")
    return DenseRetriever(embedder, searcher)


def format_table(results: dict, ks: Sequence[int]) -> str:
    """Markdown table of ``{retriever name: evaluate_qa result}``."""
    cols = [f"hit@{k}" for k in ks] + [f"recall@{k}" for k in ks] + ["mrr"] + [f"ndcg@{k}" for k in ks]
    lines = ["| retriever | " + " | ".join(c.replace("hit", "Hit").replace("recall", "Recall")
                                         .replace("ndcg", "NDCG").replace("mrr", "MRR") for c in cols)
             + " | q/s |", "|---" * (len(cols) + 2) + "|"]
    for name, r in results.items():
        qps = r["questions"] / max(r["seconds"], 1e-9)
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + f" | {qps:,.0f} |")
    return "\n".join(lines)
