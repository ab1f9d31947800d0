"""The four RAG ability splits of the bundled benchmark (RGB, Chen et al. arXiv 2309.01431), with gold labels.

Built deterministically from the generated encyclopedia (``encyclopedia.generate``) and a seed;
every split holds ``RagItem``s whose passages are *specified* (which document, which words the
window must contain, an optional text replacement); ``training/rag_passages.py`` cuts them
from the task corpus's chunk store as ``k`` passages of ``r`` tokens, exactly like retrieved
ones.  Notation: ``k`` passages per question (``qa.num_passages``).

- ``noise``: a test question's gold passage (a window of a gold document holding the answer
  and the subject's name) plus ``n`` distractors, ``n = 0 .. k-1``, the rest of the ``k`` slots
  empty; the same distractors nest across ``n`` (paired comparison).  A distractor is a
  window of the article of another entity of the same kind stating *its* value of the same
  relation (a hard negative of the right answer type), from a document that is not gold and
  whose text contains none of the question's answers.  Noise ratio = n / (n + 1).
- ``negative``: ``k`` distractors, no gold passage; the expected answer is ``REFUSAL``.
- ``integration``: two-hop questions (``CHAINS``: "In which country was X born?" = the
  birthplace of X, then that city's country) whose passages are one window stating hop 1
  (naming the subject and the bridge entity) and one stating hop 2 (naming the bridge and the
  answer), from two different documents; the hop-1 document does not contain the answer, so
  no single passage answers the question.  Needs k >= 2.
- ``counterfactual``: the gold passage with the answer replaced (every occurrence) by the
  same relation's value of another entity; the expected answer follows the passage, the
  ``original_answers`` are the pretraining fact (the model saw it in pretraining).

A passage slot is a ``PassageSpec``: ``doc_id`` (-1 = empty slot), ``needles`` (groups of
alternatives; the window must contain one phrase of every group, whole words), ``replace``
(original, new) for the counterfactual.  ``requirements`` say what the answer needs, for
context precision/recall: a list of (documents, phrases); a passage meets one when it is cut
from one of those documents and contains one of the phrases.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from megatron_retro.data.synthetic.articles import Renderer
from megatron_retro.data.synthetic.qa import answers_for, contains_words, entity_answers

REFUSAL = "not in the passages"      # the fixed answer when no passage holds the answer
SPLITS = ("noise", "negative", "integration", "counterfactual")

# (subject kind, hop-1 relation (an entity), hop-2 relation of the bridge, question template)
CHAINS: List[Tuple[str, str, str, str]] = [
    ("person", "birthplace", "country", "In which country was {s} born?"),
    ("person", "employer", "headquarters", "In which city was the organisation that {s} worked for based?"),
    ("invention", "inventor", "birth_year", "In what year was the inventor of {s} born?"),
    ("species", "discovered_by", "occupation", "What was the occupation of the person who first described {s}?"),
    ("city", "founder", "birth_year", "In what year was the founder of {s} born?"),
    ("organisation", "founder", "birthplace", "Where was the founder of {s} born?"),
    ("mountain", "first_ascent_by", "occupation", "What was the occupation of the first person to climb {s}?"),
    ("river", "source", "height_m", "How high, in metres, is the mountain on which {s} rises?"),
]


@dataclass
class PassageSpec:
    doc_id: int                                   # -1: an empty slot (all pad tokens)
    needles: Tuple[Tuple[str, ...], ...] = ()     # the window contains one phrase of every group
    role: str = "empty"                           # gold | distractor | hop1 | hop2 | empty
    replace: Optional[Tuple[str, str]] = None     # counterfactual: (original, new), every occurrence


@dataclass
class RagItem:
    id: str
    split: str
    question: str
    answers: List[str]
    relation: str                                 # answer-type key: "<kind>.<relation>", or "refusal"
    passages: List[PassageSpec]
    requirements: List[Tuple[List[int], List[str]]] = field(default_factory=list)
    original_answers: List[str] = field(default_factory=list)   # counterfactual: the pretraining fact
    noise: int = 0                                # distractors among the passages


class RagCorpus:
    """Lookups over one encyclopedia: documents' text, each entity's article, facts by id; picks
    gold documents (``gold``) and hard distractors (``distractors``)."""

    def __init__(self, enc):
        self.enc, self.world = enc, enc.entities
        self.ref = Renderer(enc.entities, random.Random(0)).ref     # how questions name an entity
        self.article = {d.entity: d.id for d in enc.documents if d.kind == "article" and d.entity}
        self.by_kind: Dict[str, List[str]] = {}
        for e in self.world.values():
            self.by_kind.setdefault(e.kind, []).append(e.id)

    def text(self, doc_id: int) -> str:
        return self.enc.documents[doc_id].text

    def names(self, entity_id: str) -> Tuple[str, ...]:
        return tuple(entity_answers(self.world[entity_id]))

    def answers(self, entity_id: str, relation: str) -> List[str]:
        return answers_for(self.world, relation, self.world[entity_id].attrs[relation])

    def free_of(self, doc_id: int, phrases: Sequence[str]) -> bool:
        return not any(contains_words(self.text(doc_id), p) for p in phrases)

    def gold(self, fact_id: str, answers: Sequence[str], names: Sequence[str], rng: random.Random,
             avoid: Sequence[str] = ()) -> Optional[PassageSpec]:
        """A document stating ``fact_id`` whose text holds an answer (and none of ``avoid``)."""
        fact = self.enc.facts.get(fact_id)
        if fact is None:
            return None
        docs = [d for d in fact.doc_ids if not self.free_of(d, answers) and self.free_of(d, avoid)]
        if not docs:
            return None
        return PassageSpec(rng.choice(docs), (tuple(answers), tuple(names)), "gold")

    def distractors(self, entity_id: str, relation: str, gold_docs: Sequence[int], answers: Sequence[str],
                    count: int, rng: random.Random) -> List[PassageSpec]:
        """``count`` hard negatives: other entities' articles stating their value of ``relation``."""
        kind = self.world[entity_id].kind
        others = [o for o in self.by_kind[kind] if o != entity_id and relation in self.world[o].attrs]
        rng.shuffle(others)
        out, used = [], set(gold_docs)
        for o in others:
            doc = self.article.get(o)
            if doc is None or doc in used or not self.free_of(doc, answers):
                continue
            theirs = self.answers(o, relation)
            needles = (tuple(theirs), self.names(o)) if not self.free_of(doc, theirs) else (self.names(o),)
            out.append(PassageSpec(doc, needles, "distractor"))
            used.add(doc)
            if len(out) == count:
                return out
        return []


def _with_empty(passages: List[PassageSpec], k: int, rng: random.Random) -> List[PassageSpec]:
    """``passages`` padded to ``k`` slots with empty ones, in a seeded order."""
    slots = passages + [PassageSpec(-1) for _ in range(k - len(passages))]
    rng.shuffle(slots)
    return slots


def build_rag_splits(enc, k: int, per_split: int, seed: int = 0, qa_split: str = "test") -> Dict[str, List[RagItem]]:
    """``{split: items}`` for the four abilities from the ``qa_split`` questions of ``enc``.

    ``per_split`` base questions (the noise split holds ``k`` items per base question, one per
    ``n``); questions whose passages cannot be specified (no document holds the answer, too few
    distractors) are skipped, in a fixed order, so the result depends only on the arguments.
    """
    corpus = RagCorpus(enc)
    pairs = sorted((q for q in enc.qa if q.split == qa_split), key=lambda q: q.id)
    random.Random(f"{seed}:rag:order").shuffle(pairs)
    out: Dict[str, List[RagItem]] = {s: [] for s in SPLITS}

    for q in pairs:
        if len(out["negative"]) >= per_split:
            break
        rng = random.Random(f"{seed}:rag:{q.id}")
        names = corpus.names(q.entity)
        gold = corpus.gold(q.fact_id, q.answers, names, rng)
        dis = corpus.distractors(q.entity, q.relation, q.gold_doc_ids, q.answers, k, rng)
        if gold is None or len(dis) < k:
            continue
        key = f"{q.entity.split(':')[0]}.{q.relation}"
        need = [(list(q.gold_doc_ids), list(q.answers))]
        for n in range(k):
            out["noise"].append(RagItem(f"{q.id}-n{n}", "noise", q.question, list(q.answers), key,
                                        _with_empty([gold] + dis[:n], k, rng), need, noise=n))
        out["negative"].append(RagItem(f"{q.id}-neg", "negative", q.question, [REFUSAL], "refusal",
                                       _with_empty(list(dis), k, rng), [], original_answers=list(q.answers),
                                       noise=k))
        cf = _counterfactual(corpus, q, gold, key, k, rng)
        if cf is not None and len(out["counterfactual"]) < per_split:
            out["counterfactual"].append(cf)
    if k >= 2:
        out["integration"] = _integration(corpus, k, per_split, seed, qa_split)
    return out


def _counterfactual(corpus: RagCorpus, q, gold: PassageSpec, key: str, k: int, rng: random.Random) -> Optional[RagItem]:
    """The gold passage with the canonical answer replaced by another entity's value of the relation."""
    world = corpus.world
    subject = world[q.entity]
    original = subject.attrs[q.relation]
    pool = sorted({e.attrs[q.relation] for e in world.values()
                   if e.kind == subject.kind and q.relation in e.attrs and e.attrs[q.relation] != original})
    rng.shuffle(pool)
    for value in pool:
        new = answers_for(world, q.relation, value)
        if corpus.free_of(gold.doc_id, new) and not any(contains_words(q.question, a) for a in new):
            spec = PassageSpec(gold.doc_id, gold.needles, "gold", (q.answers[0], new[0]))
            return RagItem(f"{q.id}-cf", "counterfactual", q.question, new, key, _with_empty([spec], k, rng),
                           [([gold.doc_id], new)], original_answers=list(q.answers))
    return None


def _integration(corpus: RagCorpus, k: int, per_split: int, seed: int, qa_split: str) -> List[RagItem]:
    """Two-hop items over the entities whose questions are in ``qa_split`` (``CHAINS``, round robin)."""
    world, split_of = corpus.world, {q.entity: q.split for q in corpus.enc.qa}
    subjects = sorted(e for e, s in split_of.items() if s == qa_split)
    random.Random(f"{seed}:rag:two-hop").shuffle(subjects)
    out: List[RagItem] = []
    for kind, rel1, rel2, template in CHAINS * per_split:
        if len(out) >= per_split:
            break
        for sid in subjects:
            s = world[sid]
            if s.kind != kind or rel1 not in s.attrs or s.attrs[rel1] not in world:
                continue
            bridge = s.attrs[rel1]
            if rel2 not in world[bridge].attrs:
                continue
            item_id = f"{sid}.{rel1}.{rel2}"
            if any(item.id == item_id for item in out):
                continue
            rng = random.Random(f"{seed}:rag:{item_id}")
            answers = corpus.answers(bridge, rel2)
            question = template.format(s=corpus.ref(s))
            bridge_names = corpus.names(bridge)
            if any(contains_words(question, a) for a in list(answers) + list(bridge_names)):
                continue
            hop1 = corpus.gold(f"{sid}.{rel1}", bridge_names, corpus.names(sid), rng, avoid=answers)
            hop2 = corpus.gold(f"{bridge}.{rel2}", answers, bridge_names, rng)
            if hop1 is None or hop2 is None or hop1.doc_id == hop2.doc_id:
                continue
            hop1.role, hop2.role = "hop1", "hop2"
            fill = corpus.distractors(bridge, rel2, [hop1.doc_id, hop2.doc_id], answers, k - 2, rng) if k > 2 else []
            if len(fill) < k - 2:
                continue
            need = [(corpus.enc.facts[f"{sid}.{rel1}"].doc_ids, list(bridge_names)),
                    (corpus.enc.facts[f"{bridge}.{rel2}"].doc_ids, list(answers))]
            out.append(RagItem(item_id, "integration", question, answers, f"{world[bridge].kind}.{rel2}",
                               _with_empty([hop1, hop2] + fill, k, rng), need, noise=len(fill)))
            break
    return out

