"""QASPER loader: questions about an NLP paper, answered from its full text.

The official release (``qasper-{train,dev}-v0.3.json``, ``qasper-test-v0.3.json``) is one
JSON object ``{paper_id: paper}``; a JSON-lines file with one paper per line (with an
``"id"`` field) is accepted too. A paper::

    {"title": "...", "abstract": "...",
     "full_text": [{"section_name": "Introduction", "paragraphs": ["...", "..."]}, ...],
     "qas": [{"question": "What datasets do they use?", "question_id": "2e1f...",
              "answers": [{"answer": {"unanswerable": false, "extractive_spans": ["SST-2"],
                                      "yes_no": null, "free_form_answer": "",
                                      "evidence": ["..."], "highlighted_evidence": ["..."]},
                           "annotation_id": "...", "worker_id": "..."}]}]}

Each annotation gives one gold answer string, as in the QASPER baseline: "Unanswerable";
"Yes"/"No"; the extractive spans joined by ", "; or the free-form answer. An annotation with
none of these is an error. The context is title, abstract and sections, one per paragraph
block, ``## section`` headed.
"""
from __future__ import annotations

from typing import Iterator, List

from megatron_retro.data.tasks.example import QAExample
from megatron_retro.data.tasks.reader import Fields, JsonFile, dedup, iter_jsonl


def _answer(a: Fields) -> tuple:
    """(answer string, answer type) of one annotation's ``answer`` object."""
    if a.get("unanswerable", bool, optional=True):
        return "Unanswerable", "none"
    yes_no = a.get("yes_no", bool, optional=True)
    if yes_no is not None:
        return ("Yes" if yes_no else "No"), "boolean"
    spans = a.get("extractive_spans", list, optional=True) or []
    if spans:
        a.texts("extractive_spans")
        return ", ".join(s.strip() for s in spans), "extractive"
    free = a.get("free_form_answer", str, optional=True)
    if free and free.strip():
        return free, "abstractive"
    a.fail(f"field {a.prefix!r} is an empty answer (not unanswerable, no yes_no, no "
           f"extractive_spans, no free_form_answer)")


def _context(p: Fields) -> str:
    parts: List[str] = [p.text("title")]
    abstract = p.get("abstract", str, optional=True)
    if abstract:
        parts.append(abstract)
    for sec in p.items("full_text"):
        name = sec.get("section_name", str, optional=True) or ""
        paras = sec.get("paragraphs", list)
        for i, para in enumerate(paras):
            if not isinstance(para, str):
                sec.fail(f"field {sec.name('paragraphs')}[{i}] must be a string")
        body = "\n".join(s for s in paras if s.strip())
        parts.append(f"## {name}\n{body}" if name else body)
    return "\n\n".join(parts)


def _paper(p: Fields, paper_id: str) -> Iterator[QAExample]:
    context = _context(p)
    for q in p.items("qas"):
        answers, types = [], []
        for ann in q.items("answers"):
            text, kind = _answer(ann.sub("answer"))
            answers.append(text)
            types.append(kind)
        if not answers:
            q.fail(f"field {q.name('answers')!r} is an empty list")
        qid = q.text("question_id")
        yield QAExample(id=qid, question=q.text("question"), answers=dedup(answers),
                        task="qasper", context=context,
                        meta={"paper_id": paper_id, "answer_types": types, "line": p.lineno})


def load_qasper(path: str) -> Iterator[QAExample]:
    if path.endswith(".jsonl"):
        for lineno, obj in iter_jsonl(path):
            p = Fields(path, lineno, obj)
            yield from _paper(p, p.text("id"))
    else:
        for paper_id, paper, lineno in JsonFile(path).members():
            yield from _paper(Fields(path, lineno, paper, paper_id), paper_id)
