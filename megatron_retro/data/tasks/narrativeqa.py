"""NarrativeQA loader: questions about a story, answered from its summary (default) or text.

Two layouts:

- JSON lines as exported from HuggingFace ``deepmind/narrativeqa``, one question per line::

    {"document": {"id": "0029bdbe...", "kind": "movie", "url": "...",
                  "summary": {"text": "Mark Hunter, a high school student ...", "title": "..."},
                  "text": "<full story or script>"},
     "question": {"text": "Who is Mark Hunter?", "tokens": [...]},
     "answers": [{"text": "A high school student.", "tokens": [...]}, {"text": "..."}]}

- the official CSVs of github.com/deepmind/narrativeqa: ``qaps.csv``
  (``document_id,set,question,answer1,answer2,...``), with the summaries read from
  ``summaries.csv`` (``document_id,set,summary,...``) found beside it or in
  ``third_party/wikipedia/``; ``split`` filters on the ``set`` column (train/valid/test).
  Full story texts are not read from the CSV layout, so ``context="text"`` needs the JSONL.
"""
from __future__ import annotations

import csv
import os
from typing import Dict, Iterator, Optional

from megatron_retro.data.tasks.example import QAExample
from megatron_retro.data.tasks.reader import Fields, dedup, iter_jsonl
from megatron_retro.errors import UserError

CONTEXTS = ("summary", "text")


def load_narrativeqa(path: str, split: Optional[str] = None,
                     context: str = "summary") -> Iterator[QAExample]:
    if context not in CONTEXTS:
        raise UserError(f"narrativeqa context={context!r}: must be one of {', '.join(CONTEXTS)}")
    if path.endswith(".csv"):
        if context != "summary":
            raise UserError(f"{path}: context='text' needs the JSONL layout (story texts are "
                            f"not in qaps.csv)")
        return _load_csv(path, split)
    return _load_jsonl(path, context)


def _load_jsonl(path: str, context: str) -> Iterator[QAExample]:
    for lineno, obj in iter_jsonl(path):
        r = Fields(path, lineno, obj)
        doc = r.sub("document")
        doc_id = doc.text("id")
        ctx = doc.sub("summary").text("text") if context == "summary" else doc.text("text")
        answers = [a.text("text") for a in r.items("answers")]
        if not answers:
            r.fail("field 'answers' is an empty list")
        yield QAExample(id=f"{doc_id}:{lineno}", question=r.sub("question").text("text"),
                        answers=dedup(answers), task="narrativeqa", context=ctx,
                        meta={"document_id": doc_id, "kind": doc.obj.get("kind"),
                              "line": lineno})


class _CsvRows:
    """Rows of a UTF-8 CSV file as dicts, with their line numbers and one-line errors."""

    def __init__(self, path: str, required):
        self.path, self.required = path, required

    def _lines(self, raw):
        """Decoded physical lines; invalid UTF-8 is reported with its physical line."""
        for lineno, line in enumerate(raw, 1):
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{self.path}:{lineno}: invalid UTF-8") from None

    def __iter__(self):
        try:
            raw = open(self.path, "rb")
        except FileNotFoundError:
            raise UserError(f"{self.path}: file not found") from None
        with raw:
            reader = csv.reader(self._lines(raw))
            try:
                header = next(reader)
            except StopIteration:
                raise UserError(f"{self.path}: empty file (no CSV header)") from None
            missing = [c for c in self.required if c not in header]
            if missing:
                raise UserError(f"{self.path}:1: missing column(s) {', '.join(missing)}")
            while True:
                start = reader.line_num + 1
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    raise UserError(f"{self.path}:{start}: malformed CSV ({e})") from None
                if len(row) != len(header):
                    raise UserError(f"{self.path}:{start}: {len(row)} columns, expected "
                                    f"{len(header)} (truncated or malformed row)")
                yield start, dict(zip(header, row))


def _summaries(qaps_path: str) -> Dict[str, str]:
    here = os.path.dirname(os.path.abspath(qaps_path))
    candidates = [os.path.join(here, "summaries.csv"),
                  os.path.join(here, "third_party", "wikipedia", "summaries.csv")]
    for p in candidates:
        if os.path.isfile(p):
            out = {}
            for lineno, row in _CsvRows(p, ("document_id", "summary")):
                if not row["summary"].strip():
                    raise UserError(f"{p}:{lineno}: field 'summary' is empty")
                out[row["document_id"]] = row["summary"]
            return out
    raise UserError(f"{qaps_path}: summaries.csv not found beside it or in "
                    f"third_party/wikipedia/ (needed for the summary contexts)")


def _load_csv(path: str, split: Optional[str]) -> Iterator[QAExample]:
    summaries = _summaries(path)
    for lineno, row in _CsvRows(path, ("document_id", "set", "question", "answer1", "answer2")):
        if split is not None and row["set"] != split:
            continue
        for col in ("document_id", "question"):
            if not row[col].strip():
                raise UserError(f"{path}:{lineno}: field {col!r} is empty")
        answers = dedup([row["answer1"], row["answer2"]])
        if not answers:
            raise UserError(f"{path}:{lineno}: fields 'answer1' and 'answer2' are both empty")
        doc_id = row["document_id"]
        if doc_id not in summaries:
            raise UserError(f"{path}:{lineno}: document_id {doc_id!r} has no summary in "
                            f"summaries.csv")
        yield QAExample(id=f"{doc_id}:{lineno}", question=row["question"], answers=answers,
                        task="narrativeqa", context=summaries[doc_id],
                        meta={"document_id": doc_id, "set": row["set"], "line": lineno})
