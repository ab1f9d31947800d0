"""Answer metrics: exact match and token F1 with SQuAD v1.1 normalisation, ROUGE-L F-measure
from the ``rouge-score`` library; each is the max over the gold answers, and `score_all`
averages them over a set of predictions.

Normalisation (the official SQuAD v1.1 evaluation script's rule, re-implemented): lower-case,
drop ASCII punctuation (``string.punctuation``), drop the articles a/an/the as whole words,
collapse whitespace. F1 is over the normalised whitespace tokens (a multiset overlap); as in
v1.1, a prediction and gold that both normalise to nothing have EM 1 but F1 0.
ROUGE-L uses ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)`` (its own
tokeniser: lower-case, non-alphanumerics to spaces, Porter stemming). Scores are in [0, 1].
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Iterable, List, Mapping, Sequence

from megatron_retro.errors import UserError

METRICS = ("em", "f1", "rougeL")
_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, gold: str) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``gold`` (rouge-score, stemmed)."""
    return _rouge_scorer().score(gold, prediction)["rougeL"].fmeasure


def answer_concentration(predictions: Iterable[str]) -> tuple:
    """(most common normalised answer, the share of predictions giving it): 1.0 for a model
    that answers every question the same way (an empty answer counts as one answer too)."""
    counts = Counter(normalize_answer(p) for p in predictions)
    if not counts:
        raise UserError("no predictions to measure")
    answer, n = counts.most_common(1)[0]
    return answer, n / sum(counts.values())


_LETTER = re.compile(r"^\W*\(?([A-Za-z])\)?\W*$")


def choose_option(prediction: str, options: Sequence[str]) -> int:
    """The option a free-text answer picks: a bare letter ("B", "(b)") names it; otherwise the
    option with the highest token F1 against the prediction (ties: the first); -1 when the
    prediction shares no word with any option (no choice: counted wrong)."""
    letter = _LETTER.match(prediction)
    if letter:
        i = ord(letter.group(1).upper()) - ord("A")
        if i < len(options):
            return i
    f1 = [token_f1(prediction, o) for o in options]
    best = max(range(len(options)), key=lambda i: (f1[i], -i)) if options else -1
    return best if best >= 0 and f1[best] > 0 else -1


def _check_golds(golds: Sequence[str]) -> None:
    if isinstance(golds, str) or not golds:
        raise UserError(f"gold answers must be a non-empty list of strings, got {golds!r}")


def max_over_golds(metric, prediction: str, golds: Sequence[str]) -> float:
    _check_golds(golds)
    return max(metric(prediction, g) for g in golds)


def score_one(prediction: str, golds: Sequence[str]) -> Dict[str, float]:
    """{"em", "f1", "rougeL"} of one prediction, each the max over ``golds``."""
    return {"em": max_over_golds(exact_match, prediction, golds),
            "f1": max_over_golds(token_f1, prediction, golds),
            "rougeL": max_over_golds(rouge_l, prediction, golds)}


@dataclass
class Scores:
    """Mean metrics over ``n`` predictions (each in [0, 1]) and the per-example values."""

    em: float
    f1: float
    rougeL: float
    n: int
    per_example: List[Dict[str, float]]

    def as_dict(self) -> Dict[str, float]:
        return {"em": self.em, "f1": self.f1, "rougeL": self.rougeL, "n": self.n}


def score_all(predictions: Iterable[str], golds: Iterable[Sequence[str]]) -> Scores:
    """Score aligned predictions and gold-answer lists; their lengths must match."""
    predictions, golds = list(predictions), list(golds)
    if len(predictions) != len(golds):
        raise UserError(f"{len(predictions)} predictions for {len(golds)} questions: "
                        f"counts must match")
    if not predictions:
        raise UserError("no predictions to score")
    per = [score_one(p, g) for p, g in zip(predictions, golds)]
    mean = {m: sum(r[m] for r in per) / len(per) for m in METRICS}
    return Scores(em=mean["em"], f1=mean["f1"], rougeL=mean["rougeL"], n=len(per),
                  per_example=per)


def score_by_id(examples: Sequence, predictions: Mapping[str, str]) -> Scores:
    """Score ``predictions`` (question id -> generated answer) against ``examples`` (objects
    with ``.id`` and ``.answers``, e.g. `QAExample`), in the examples' order; a missing or an
    unknown id is an error, so a partial run cannot be scored as if complete."""
    ids = [e.id for e in examples]
    missing = [i for i in ids if i not in predictions]
    if missing:
        raise UserError(f"no prediction for {len(missing)} of {len(ids)} questions "
                        f"(first: id {missing[0]!r})")
    extra = sorted(set(predictions) - set(ids))
    if extra:
        raise UserError(f"{len(extra)} predictions for unknown question ids (first: "
                        f"{extra[0]!r})")
    return score_all([predictions[i] for i in ids], [e.answers for e in examples])
