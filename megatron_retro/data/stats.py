"""Corpus statistics: held-out token streams, unigram baselines, retrieval coverage of the
held-out text and of the QA answers, and the question-blind QA baseline.

The unigram entropy of a token stream is the loss of the best context-free model of that
stream: the language model's held-out loss must fall far below it.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict

import numpy as np

from megatron_retro.data.synthetic.encyclopedia import SPLITS, document_split
from megatron_retro.errors import UserError


def retrieval_coverage(enc) -> dict:
    """How much of the held-out text and the QA answers the training documents cover:
    the share of facts stated in valid/test documents that some train document also states
    (what lets neighbours retrieved from *other* documents help), and the share of QA pairs
    with a gold document in the train split."""
    split_of = {d.id: d.split for d in enc.documents}
    held = {f for d in enc.documents if d.split != "train" for f in d.facts}
    covered = sum(any(split_of[i] == "train" for i in enc.facts[f].doc_ids) for f in held)
    qa_ok = sum(any(split_of[i] == "train" for i in q.gold_doc_ids) for q in enc.qa)
    per_fact = sorted(len(f.doc_ids) for f in enc.facts.values())
    return {"heldout_facts": len(held),
            "heldout_facts_in_train_docs": round(covered / max(1, len(held)), 4),
            "qa_with_train_gold_doc": round(qa_ok / max(1, len(enc.qa)), 4),
            "docs_per_fact_min_median_max": [per_fact[0], per_fact[len(per_fact) // 2],
                                             per_fact[-1]],
            "qa_blind_baseline_test_em": round(blind_baseline_em(enc.qa), 4)}


def blind_baseline_em(qa) -> float:
    """Exact match on the test QA of the best question-blind guess: the most frequent train
    answer of the question's relation. Low = the answers must come from the corpus."""
    best: Dict[str, Counter] = {}
    for q in qa:
        if q.split == "train":
            best.setdefault(q.relation, Counter())[q.answers[0]] += 1
    test = [q for q in qa if q.split == "test"]
    hits = sum(q.relation in best and best[q.relation].most_common(1)[0][0] == q.answers[0]
               for q in test)
    return hits / max(1, len(test))


def heldout_stream(prefix: str, split: str = "98,2,0", which: str = "valid") -> np.ndarray:
    """int64[n] concatenated token ids (EOD between documents) of the documents in split
    ``which`` of the indexed dataset at ``prefix`` (the ranges megatron uses)."""
    from megatron_retro.data.indexed import open_indexed

    if which not in SPLITS:
        raise UserError(f"which={which!r}: must be one of {', '.join(SPLITS)}")
    ds = open_indexed(prefix)
    b, e = document_split(len(ds), split)[SPLITS.index(which)]
    if b == e:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.array(ds[i], dtype=np.int64) for i in range(b, e)])  # copies


def heldout_tokens(data, which: str = "valid") -> np.ndarray:
    """The token stream of split ``which`` of a prepared ``BundledData`` (see heldout_stream)."""
    return heldout_stream(data.prefix, str(data.params["split"]), which)


def unigram_entropy(token_ids) -> float:
    """Entropy (nats/token) of the empirical unigram distribution of ``token_ids``."""
    counts = np.bincount(np.asarray(token_ids, dtype=np.int64).ravel())
    counts = counts[counts > 0].astype(np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def unigram_cross_entropy(train_ids, eval_ids, vocab_size: int) -> float:
    """nats/token of ``eval_ids`` under an add-one-smoothed unigram model fit on ``train_ids``:
    the loss of the best model that ignores context, i.e. what an LM must beat."""
    counts = np.bincount(np.asarray(train_ids, dtype=np.int64).ravel(),
                         minlength=vocab_size)[:vocab_size].astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    ev = np.asarray(eval_ids, dtype=np.int64).ravel()
    return float(-logp[ev].mean()) if ev.size else 0.0
