"""Open-domain QA loaders (no reading context; answers come from retrieval): the bundled
synthetic QA, NQ-open and TriviaQA.

Formats (one example line each):

- bundled (``qa/{train,valid,test}.jsonl`` of `prepare_bundled_data`)::

    {"id": "q17", "question": "Where was Ada Brell born?", "answers": ["Ossel"],
     "entity": "p3", "relation": "birthplace", "fact_id": "p3.birthplace", "gold_doc_ids": [4]}

- NQ-open (``NQ-open.{train,dev}.jsonl``, google-research-datasets/natural-questions)::

    {"question": "who wrote the song photograph by ringo starr", "answer": ["Ringo Starr",
     "George Harrison"]}

  (DPR-style lines with ``"answers"`` instead of ``"answer"`` are accepted too.)

- TriviaQA, the original JSON (``qa/wikipedia-dev.json``, ``unfiltered-web-dev.json``)::

    {"Data": [{"Question": "Which Lloyd Webber musical premiered in the US in 1994?",
               "QuestionId": "tc_33", "Answer": {"Value": "Sunset Boulevard",
               "Aliases": ["Sunset Blvd", ...], "NormalizedAliases": [...], ...}, ...}],
     "Domain": "Wikipedia", "Version": 1.0, "Split": "dev"}

  or JSON lines, each either one such record, a HuggingFace ``trivia_qa`` row
  (``{"question", "question_id", "answer": {"value", "aliases", "normalized_aliases"}}``) or a
  simplified ``{"question", "answers": [...]}`` line. Answers = Value then Aliases (the
  lower-cased NormalizedAliases are only used when no Aliases are given), duplicates dropped.
"""
from __future__ import annotations

import os
from typing import Iterator

from megatron_retro.data.tasks.example import QAExample
from megatron_retro.data.tasks.reader import Fields, JsonFile, dedup, iter_jsonl


def _stem(path: str) -> str:
    return os.path.basename(path).split(".")[0]


def load_bundled(path: str) -> Iterator[QAExample]:
    for lineno, obj in iter_jsonl(path):
        r = Fields(path, lineno, obj)
        yield QAExample(
            id=r.text("id"), question=r.text("question"), answers=dedup(r.texts("answers")),
            task="bundled",
            meta={"entity": r.text("entity"), "relation": r.text("relation"),
                  "fact_id": r.text("fact_id"), "gold_doc_ids": _int_list(r, "gold_doc_ids"),
                  "line": lineno})


def _int_list(r: Fields, key: str):
    v = r.get(key, list)
    for i, x in enumerate(v):
        if not isinstance(x, int) or isinstance(x, bool):
            r.fail(f"field {r.name(key)}[{i}] must be an integer")
    return v


def load_nq_open(path: str) -> Iterator[QAExample]:
    stem = _stem(path)
    for lineno, obj in iter_jsonl(path):
        r = Fields(path, lineno, obj)
        key = "answers" if "answers" in obj and "answer" not in obj else "answer"
        qid = r.text("id", optional=True) if isinstance(obj.get("id"), str) else None
        yield QAExample(id=qid or f"{stem}:{lineno}", question=r.text("question"),
                        answers=dedup(r.texts(key)), task="nq_open", meta={"line": lineno})


# TriviaQA layouts that nest the answer, by the field that marks them (tried in this order):
# question, question id, answer object, its aliases, normalised aliases, value and type fields.
_TRIVIA_NESTED = {
    "Question": ("Question", "QuestionId", "Answer", "Aliases", "NormalizedAliases", "Value", "Type"),  # original
    "answer": ("question", "question_id", "answer", "aliases", "normalized_aliases", "value", "type"),   # HuggingFace
}


def _trivia_nested(r: Fields, keys: tuple) -> tuple:
    """(question, id, answers, meta) of a record whose answer is an object with aliases."""
    question_key, id_key, answer_key, aliases_key, normalized_key, value_key, type_key = keys
    question, qid = r.text(question_key), r.text(id_key, optional=True)
    a = r.sub(answer_key)
    aliases = a.texts(aliases_key, allow_empty_list=True) if a.has(aliases_key) else []
    if not aliases and a.has(normalized_key):
        aliases = a.texts(normalized_key, allow_empty_list=True)
    return question, qid, [a.text(value_key)] + aliases, {"answer_type": a.obj.get(type_key)}


def _trivia_record(r: Fields, lineno: int, fallback_id: str) -> QAExample:
    """One TriviaQA record in the original, HuggingFace or simplified layout."""
    nested = next((keys for marker, keys in _TRIVIA_NESTED.items() if marker in r.obj), None)
    if nested:
        question, qid, answers, meta = _trivia_nested(r, nested)
    elif "answers" in r.obj:                                  # simplified
        question, qid = r.text("question"), None
        if isinstance(r.obj.get("id"), str):
            qid = r.text("id")
        answers, meta = r.texts("answers"), {}
    else:
        r.fail("missing field 'Answer' (original TriviaQA), 'answer' (HuggingFace) or "
               "'answers' (simplified)")
    meta["line"] = lineno
    return QAExample(id=qid or fallback_id, question=question, answers=dedup(answers),
                     task="triviaqa", meta=meta)


def load_triviaqa(path: str) -> Iterator[QAExample]:
    stem = _stem(path)
    if path.endswith(".json"):
        doc = JsonFile(path)
        for index, item, lineno in doc.array_items("Data"):
            r = Fields(path, lineno, item, f"Data[{index}]")
            yield _trivia_record(r, lineno, f"{stem}:{index}")
    else:
        for lineno, obj in iter_jsonl(path):
            yield _trivia_record(Fields(path, lineno, obj), lineno, f"{stem}:{lineno}")
