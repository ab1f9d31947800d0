"""Reference-based RAG quality metrics (Gao et al. arXiv 2312.10997, §7): context relevance,
faithfulness, answer relevance — computed from gold labels, no LLM judge.

Text comparisons use the SQuAD normalisation of ``metrics.normalize_answer`` (lower case,
punctuation and articles dropped; "12,400" becomes "12400").  Notation: k passages per question.

**Context relevance** of the k passages handed to the model.  A question's *requirements*
are pairs (documents, phrases): a single-fact question has one, (its gold documents, its
answers); a two-hop question two, (documents stating hop 1, the bridge entity's names) and
(documents stating hop 2, the answers).  A passage *meets* a requirement when it is cut from
one of its documents and contains one of its phrases as whole words (an answer-bearing chunk).
Over the non-empty passages of a question:

- ``context_precision`` = passages meeting some requirement / non-empty passages;
- ``context_precision_doc`` = passages from any requirement's documents / non-empty passages;
- ``context_recall`` = requirements met by some passage / requirements;
- ``context_recall_doc`` = requirements with a passage from their documents / requirements.
A question without requirements (negative rejection) has no recall (None, left out of means)
and precision 0.  Example: gold documents {4, 9}, answer "1740"; passages (doc 9, "... born in
1740 ..."), (doc 9, "... a painter ..."), (doc 30, "... 1788 ..."): precision 1/3, precision_doc
2/3, recall 1, recall_doc 1.

**Faithfulness**: is what the model said in the passages it was given?  The *content tokens*
of a text are its normalised words minus ``STOPWORDS``.  A prediction's support is the share
of its content tokens that occur among the content tokens of the passages; the prediction is
*faithful* when its support is 1 (every content token is in the passages).  Predictions that
claim nothing — no content token, or the refusal string — are *abstentions*: they are left
out of the faithfulness mean and counted in ``abstained``.  ``faithfulness`` is the share of
faithful predictions among the claiming ones (``support`` the mean support);
``gold_faithfulness`` the same against the passages that meet a requirement only (None for a
question with none).  Worked examples, passages P1 = "Tarvenholm lies on the Ossel River."
(gold) and P2 = "Brimwick lies on the Vell River." (distractor), question "On which river
does Tarvenholm lie?":

- "Ossel River": content {ossel, river}, both in P1 → faithful, gold-faithful, EM 1;
- "the Ossel": content {ossel} → faithful (support 1), EM 0 — faithfulness is not correctness;
- "Vell River" — **copied from the distractor**: {vell, river} are in P2 → counted
  *faithful* by ``faithfulness`` (it is grounded in the context the model was given) but
  *unfaithful* by ``gold_faithfulness`` (support 1/2: "vell" is in no gold passage), EM 0;
- "Kelmor River": {kelmor} is in no passage → support 1/2, unfaithful to both (a hallucination);
- "not in the passages" (``REFUSAL``) or "": abstentions, in neither mean.

**Answer relevance**: the prediction is of the question's expected answer type, known from the
generator (``AnswerTypes.expected(relation)``: a year; a number; a person / city / country /
river / mountain / organisation / species / invention of the world; a value of a closed list
such as occupations or colours; the refusal string for negative rejection).  A prediction has
a type when one member of its inventory occurs in it as whole words (years: a token of 3-4
digits; numbers: a token of digits).  E.g. "When was Anna Vell born?" → year: "1740" relevant,
"Tarvenholm" not.

**Judge hook**: ``Judge.judge(question, prediction, passages, item) -> dict`` is the one
interface a model-based judge would implement (``register_judge``); ``ReferenceJudge``, the
default and the only one shipped, computes the reference-based scores above.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set

from megatron_retro.data.synthetic.qa import answers_for, contains_words, entity_answers
from megatron_retro.data.synthetic.rag_splits import REFUSAL
from megatron_retro.errors import UserError
from megatron_retro.evaluation.metrics import normalize_answer

STOPWORDS = frozenset("""a an the of in on at to for from by with and or is was were be been it its
this that which who whom what when where how as he she they his her their km kilometres metres m cm
centimetres""".split())
_YEAR, _NUMBER = re.compile(r"^\d{3,4}$"), re.compile(r"^\d+$")
YEAR_RELATIONS = ("birth_year", "death_year", "founded_year", "leader_since", "discovery_year", "year",
                  "first_ascent_year", "work_year")
NUMBER_RELATIONS = ("population", "length_km", "length_cm", "height_m", "distance_km")


def content_tokens(text: str) -> List[str]:
    return [t for t in normalize_answer(text).split() if t not in STOPWORDS]


def is_refusal(prediction: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(REFUSAL)


# -- context relevance ----------------------------------------------------------------------
def meets(doc: int, text: str, requirement) -> bool:
    docs, phrases = requirement
    return doc in set(docs) and any(contains_words(text, p) for p in phrases)


def context_scores(docs: Sequence[int], texts: Sequence[str], requirements) -> Dict[str, Optional[float]]:
    """Context precision / recall of one question's passages (doc -1 = empty slot), see the module doc."""
    given = [(d, t) for d, t in zip(docs, texts) if d >= 0]
    all_docs = {d for req in requirements for d in req[0]}
    out: Dict[str, Optional[float]] = {"context_precision": 0.0, "context_precision_doc": 0.0,
                                       "context_recall": None, "context_recall_doc": None}
    if given:
        out["context_precision"] = sum(any(meets(d, t, r) for r in requirements) for d, t in given) / len(given)
        out["context_precision_doc"] = sum(d in all_docs for d, _ in given) / len(given)
    if requirements:
        out["context_recall"] = sum(any(meets(d, t, r) for d, t in given) for r in requirements) / len(requirements)
        out["context_recall_doc"] = sum(any(d in set(r[0]) for d, _ in given) for r in requirements) / len(requirements)
    return out


# -- faithfulness ---------------------------------------------------------------------------
def support(prediction: str, passages: Sequence[str]) -> Optional[float]:
    """Share of the prediction's content tokens found in the passages; None for an abstention."""
    claim = content_tokens(prediction)
    if not claim or is_refusal(prediction):
        return None
    vocab: Set[str] = set()
    for p in passages:
        vocab.update(content_tokens(p))
    return sum(t in vocab for t in claim) / len(claim)


def faithfulness_scores(prediction: str, docs: Sequence[int], texts: Sequence[str], requirements) -> dict:
    """support / faithful against all given passages and against the requirement-meeting ones."""
    s = support(prediction, texts)
    gold = [t for d, t in zip(docs, texts) if d >= 0 and any(meets(d, t, r) for r in requirements)]
    g = support(prediction, gold) if gold else None
    return {"support": s, "faithful": None if s is None else float(s == 1.0),
            "gold_faithful": None if (s is None or g is None) else float(g == 1.0),
            "abstained": float(s is None)}


# -- answer relevance -----------------------------------------------------------------------
class AnswerTypes:
    """The answer type of each relation and the inventory of each type, from the generator's world."""

    def __init__(self, world: dict):
        self.inventory: Dict[str, Set[str]] = {}
        self.of_relation: Dict[str, Set[str]] = {}
        for e in world.values():
            self.inventory.setdefault(e.kind, set()).update(normalize_answer(a) for a in entity_answers(e))
        for e in world.values():
            for rel, value in e.attrs.items():
                key = f"{e.kind}.{rel}"
                if value in world:
                    self.of_relation.setdefault(key, set()).add(world[value].kind)
                elif rel in YEAR_RELATIONS:
                    self.of_relation[key] = {"year"}
                elif rel in NUMBER_RELATIONS:
                    self.of_relation[key] = {"number"}
                else:
                    self.of_relation[key] = {rel}
                    self.inventory.setdefault(rel, set()).update(
                        normalize_answer(a) for a in answers_for(world, rel, value))
        self.inventory["refusal"] = {normalize_answer(REFUSAL)}

    def expected(self, relation: str) -> Set[str]:
        if relation == "refusal":
            return {"refusal"}
        if relation not in self.of_relation:
            raise UserError(f"answer type: unknown relation {relation!r}")
        return self.of_relation[relation]

    def has_type(self, prediction: str, kind: str) -> bool:
        words = normalize_answer(prediction).split()
        if kind == "year":
            return any(_YEAR.match(w) for w in words)
        if kind == "number":
            return any(_NUMBER.match(w) for w in words)
        text = " " + " ".join(words) + " "
        return any(f" {m} " in text for m in self.inventory.get(kind, ()) if m)

    def relevant(self, prediction: str, relation: str) -> float:
        return float(any(self.has_type(prediction, kind) for kind in self.expected(relation)))


# -- the judge interface ----------------------------------------------------------------------
class Judge:
    """Scores one answer: ``judge(question, prediction, passages, item) -> {metric: value | None}``.

    ``passages``: the k passage texts the model read ("" for an empty slot); ``item``: the
    ``RagItem`` (answers, relation, requirements) plus ``docs``, the passages' document ids.
    """

    name = "judge"

    def judge(self, question: str, prediction: str, passages: Sequence[str], item, docs: Sequence[int]) -> dict:
        raise NotImplementedError


class ReferenceJudge(Judge):
    """The reference-based scores of this module: context relevance, faithfulness, answer relevance."""

    name = "reference"

    def __init__(self, types: AnswerTypes):
        self.types = types

    def judge(self, question, prediction, passages, item, docs) -> dict:
        out = context_scores(docs, passages, item.requirements)
        out.update(faithfulness_scores(prediction, docs, passages, item.requirements))
        out["answer_relevance"] = self.types.relevant(prediction, item.relation)
        out["refused"] = float(is_refusal(prediction))
        return out


JUDGES: Dict[str, Callable[..., Judge]] = {"reference": ReferenceJudge}


def register_judge(name: str, factory: Callable[..., Judge]) -> None:
    """Make a judge selectable by name (e.g. a local model scoring faithfulness)."""
    JUDGES[name] = factory


def make_judge(name: str, types: AnswerTypes) -> Judge:
    if name not in JUDGES:
        raise UserError(f"--judge {name!r}: choose one of {', '.join(sorted(JUDGES))}")
    return JUDGES[name](types)


def mean_scores(rows: Iterable[dict]) -> Dict[str, Optional[float]]:
    """Per-metric mean over the rows, ignoring None (undefined for that question)."""
    sums: Dict[str, float] = {}
    counts: Dict[str, int] = {}
    for row in rows:
        for key, v in row.items():
            counts.setdefault(key, 0)
            if v is not None:
                sums[key] = sums.get(key, 0.0) + float(v)
                counts[key] += 1
    return {k: (sums[k] / counts[k] if counts[k] else None) for k in counts}
