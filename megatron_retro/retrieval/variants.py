"""Two retrieval variants of the RAG survey (Gao et al. arXiv 2312.10997, §3) that need no LLM.

Notation: ``n`` queries, ``k`` results, ``U`` small units, ``C`` chunks of the store.  Both
keep the retriever contract of ``hybrid``: ``search(texts, k) -> (scores float32[n, k],
ids int64[n, k])``, chunk ids of one store, best first, -1 where nothing matched.

**Small-to-big** (``SmallToBigRetriever``): the text of every chunk is cut into sentences
(``sentence_units``: at least ``min_words`` words; a chunk without one keeps its whole text as
one unit), the units are embedded and searched exactly (faiss ``IndexFlatIP`` over
L2-normalised vectors: cosine), and each unit hit is replaced by its enclosing chunk — the
larger window the model reads (chunk + continuation, ``store.neighbours``); a chunk keeps the
rank of its best unit, repeats are dropped.  A small unit matches a precise question more
sharply than a 64-token window that mixes several facts.

**Multi-query fusion** (``MultiQueryRetriever``): the question plus rule-based reformulations
(``reformulations``: the keywords without question words and stop words; a declarative form,
"Where was Anna Vell born?" -> "Anna Vell was born in"; the capitalised names alone), each
searched by a base retriever for ``depth`` results and fused by reciprocal rank
(``hybrid.reciprocal_rank_fusion``, c = 60).
"""
from __future__ import annotations

import re
from typing import List

import numpy as np

from megatron_retro.retrieval.hybrid import reciprocal_rank_fusion

_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_WH = re.compile(r"^(in what year|in which \w+|on which \w+|of which \w+|under whom|since what year|in what \w+|"
                 r"from what \w+|for which \w+|what \w+|which \w+|how \w+|where|when|who|whom|what|which)\s+",
                 re.IGNORECASE)
_AUX = ("was", "is", "were", "are", "did", "does", "do", "lie", "lies")
_HINT = {"where": "in", "when": "in", "in what year": "in the year", "who": "by"}
STOP = frozenset("a an the of in on at to for from by with and or is was were are be been did does do what which "
                 "who whom where when how it its this that as".split())


def sentence_units(text: str, min_words: int = 3) -> List[str]:
    units = [u.strip() for u in _SENTENCE.split(text) if len(u.split()) >= min_words]
    return units or [text]


def reformulations(question: str) -> List[str]:
    """The question first, then its distinct rule-based rewrites (keywords, declarative, names)."""
    q = " ".join(question.strip().rstrip("?").split())
    out = [question]
    words = re.findall(r"[\w'-]+", q)
    keywords = " ".join(w for w in words if w.lower() not in STOP)
    wh = _WH.match(q)
    if wh:
        rest = q[wh.end():].split()
        head = wh.group(1).lower()
        if rest and rest[0].lower() in _AUX:
            aux, rest = rest[0], rest[1:]
            participle = rest and re.search(r"(ed|n)$", rest[-1])          # "was born", "was founded"
            verb = rest[-1:] if participle and aux.lower() in ("was", "is", "were", "are") else []
            subject = rest[:-1] if verb else rest
            tail = _HINT.get(head, "")
            declarative = " ".join(subject + ([aux] if aux.lower() not in ("did", "does", "do") else []) + verb
                                   + ([tail] if tail else []))
        else:
            declarative = " ".join(rest)
        out.append(declarative)
    names = " ".join(m.group(0) for m in re.finditer(r"\b[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*", q)
                     if m.group(0).split()[0].lower() not in STOP)
    for extra in (keywords, names):
        out.append(extra)
    seen, distinct = set(), []
    for t in out:
        key = t.strip().lower()
        if key and key not in seen:
            seen.add(key)
            distinct.append(t.strip())
    return distinct


class MultiQueryRetriever:
    """Each question and its reformulations searched by ``base`` (``depth`` each), fused by RRF."""

    def __init__(self, base, depth: int = 50, c: float = 60.0):
        self.base, self.depth, self.c = base, depth, c

    def search(self, texts: list, k: int):
        variants = [reformulations(t) for t in texts]
        flat = [v for vs in variants for v in vs]
        _, ids = self.base.search(flat, max(k, self.depth))                    # [sum(variants), depth]
        scores = np.full((len(texts), k), -np.inf, np.float32)
        out = np.full((len(texts), k), -1, np.int64)
        row = 0
        for q, vs in enumerate(variants):
            s, i = reciprocal_rank_fusion([ids[row + j:row + j + 1] for j in range(len(vs))], k, self.c)
            scores[q], out[q] = s[0], i[0]
            row += len(vs)
        return scores, out


class SmallToBigRetriever:
    """Search sentence units of the store's chunks; hand back their enclosing chunks."""

    def __init__(self, embedder, store, min_words: int = 3, depth: int = 100, batch_size: int = 256):
        import faiss

        units, owner = [], []
        for c in range(len(store)):
            for u in sentence_units(store.text(c), min_words):
                units.append(u)
                owner.append(c)
        self.embedder, self.depth = embedder, depth
        self.unit_chunk = np.asarray(owner, np.int64)                            # [U]
        vectors = np.ascontiguousarray(embedder.embed(units, batch_size=batch_size), np.float32)  # [U, d]
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)
        self.num_units = len(units)

    def search(self, texts: list, k: int):
        q = np.ascontiguousarray(self.embedder.embed(list(texts)), np.float32)    # [n, d]
        depth = min(max(self.depth, 4 * k), self.num_units)
        unit_scores, unit_ids = self.index.search(q, depth)                      # [n, depth]
        scores = np.full((len(texts), k), -np.inf, np.float32)
        ids = np.full((len(texts), k), -1, np.int64)
        for r in range(len(texts)):
            seen: dict = {}
            for s, u in zip(unit_scores[r].tolist(), unit_ids[r].tolist()):
                if u < 0:
                    continue
                c = int(self.unit_chunk[u])
                if c not in seen:
                    seen[c] = s
                    if len(seen) == k:
                        break
            for j, (c, s) in enumerate(seen.items()):
                ids[r, j], scores[r, j] = c, s
        return scores, ids

