"""Task registry: `load_task(name, path, split=None, **options)` -> iterator of `QAExample`.

``path`` is a task file, or a directory holding one file per split; then ``split`` picks the
file whose name contains the split as a word (``valid`` also matches ``dev``, ``val`` and
``validation``), e.g. ``qa/valid.jsonl``, ``NQ-open.dev.jsonl``, ``qasper-dev-v0.3.json``,
``QuALITY.v1.0.1.htmlstripped.dev``, ``val.jsonl``. For NarrativeQA's ``qaps.csv``, which
holds every split, ``split`` filters rows instead. Unknown tasks, missing files and ambiguous
splits fail at call time; bad records fail while iterating, naming file and line.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from megatron_retro.data.tasks.example import QAExample
from megatron_retro.data.tasks.narrativeqa import load_narrativeqa
from megatron_retro.data.tasks.open_domain import load_bundled, load_nq_open, load_triviaqa
from megatron_retro.data.tasks.qasper import load_qasper
from megatron_retro.data.tasks.quality import load_quality
from megatron_retro.data.tasks.qmsum import load_qmsum
from megatron_retro.errors import UserError

DEFAULT_TASK = "bundled"
SPLIT_ALIASES: Dict[str, Tuple[str, ...]] = {
    "train": ("train",), "valid": ("valid", "validation", "dev", "val"), "test": ("test",)}


@dataclass(frozen=True)
class TaskSpec:
    """How to read one task: its loader, accepted file endings, whether the file has splits."""

    loader: Callable[..., Iterator[QAExample]]
    suffixes: Tuple[str, ...]
    split_inside: bool = False     # one file holds every split; ``split`` filters rows
    options: Tuple[str, ...] = ()  # keyword options the loader accepts
    layout: str = ""               # one-line description of the file layout
    documents: bool = False        # every example carries its own document (``context``)


TASKS: Dict[str, TaskSpec] = {
    "bundled": TaskSpec(load_bundled, (".jsonl",), layout=(
        "qa/{train,valid,test}.jsonl: id, question, answers, entity, relation, fact_id, "
        "gold_doc_ids")),
    "nq_open": TaskSpec(load_nq_open, (".jsonl",), layout=(
        "NQ-open.{train,dev}.jsonl: question, answer (list)")),
    "triviaqa": TaskSpec(load_triviaqa, (".json", ".jsonl"), layout=(
        '{"Data": [{Question, QuestionId, Answer{Value, Aliases}}]} JSON, or JSONL of those '
        "records / HF rows / {question, answers}")),
    "narrativeqa": TaskSpec(load_narrativeqa, (".jsonl", ".csv"), split_inside=True,
                            options=("context",), documents=True, layout=(
        "HF JSONL {document{id, summary{text}, text}, question{text}, answers[{text}]}, or "
        "qaps.csv + summaries.csv")),
    "qasper": TaskSpec(load_qasper, (".json", ".jsonl"), documents=True, layout=(
        "{paper_id: {title, abstract, full_text[{section_name, paragraphs}], qas[...]}} JSON")),
    "quality": TaskSpec(load_quality, (".jsonl", ".train", ".dev", ".test"), documents=True, layout=(
        "JSONL, one article per line: article_id, article, questions[{question, options, "
        "gold_label}]")),
    "qmsum": TaskSpec(load_qmsum, (".jsonl",), documents=True, layout=(
        "JSONL, one meeting per line: meeting_transcripts, general_query_list, "
        "specific_query_list")),
}
ALIASES = {"nq": "nq_open", "nq-open": "nq_open", "trivia_qa": "triviaqa",
           "narrative_qa": "narrativeqa"}


def task_names() -> List[str]:
    return sorted(TASKS)


def has_documents(name: str) -> bool:
    """Whether every example of task ``name`` carries its own document to read (``context``)."""
    return _spec(name)[1].documents


def _spec(name: str) -> Tuple[str, TaskSpec]:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise UserError(f"task {name!r}: unknown, choose one of {', '.join(task_names())}")
    return key, TASKS[key]


def canonical_split(split: str) -> str:
    for canon, names in SPLIT_ALIASES.items():
        if split.lower() in names:
            return canon
    raise UserError(f"split={split!r}: must be one of train, valid (dev, val, validation), test")


def _split_file(name: str, spec: TaskSpec, directory: str, split: Optional[str]) -> str:
    if split is None:
        raise UserError(f"{directory}: is a directory; give split= (train, valid or test) or a "
                        f"file")
    words = SPLIT_ALIASES[canonical_split(split)]
    found = []
    for entry in sorted(os.listdir(directory)):
        full = os.path.join(directory, entry)
        tokens = set(re.split(r"[^a-z0-9]+", entry.lower()))
        if os.path.isfile(full) and entry.endswith(spec.suffixes) and tokens & set(words):
            found.append(full)
    if not found and os.path.isdir(os.path.join(directory, "qa")):   # a bundled data dir
        return _split_file(name, spec, os.path.join(directory, "qa"), split)
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(map(os.path.basename, found))})"
        raise UserError(f"{directory}: {what} {name} file(s) for split {split!r} "
                        f"(ending in {', '.join(spec.suffixes)}); pass the file itself")
    return found[0]


def resolve_task_file(name: str, path: str, split: Optional[str] = None) -> str:
    """The file `load_task` would read (for logs and manifests)."""
    key, spec = _spec(name)
    if os.path.isdir(path):
        if spec.split_inside:
            qaps = os.path.join(path, "qaps.csv")
            if os.path.isfile(qaps):
                return qaps
        return _split_file(key, spec, path, split)
    if not os.path.exists(path):
        raise UserError(f"{path}: file not found (task {key})")
    return path


def load_task(name: str, path: str, split: Optional[str] = None,
              **options) -> Iterator[QAExample]:
    """Stream the examples of task ``name`` from ``path`` (file or split directory).

    ``options`` are task-specific (narrativeqa: ``context="summary"|"text"``). The returned
    iterator reads the file once, record by record; wrap it in ``list()`` to keep it.
    """
    key, spec = _spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise UserError(f"task {key}: unknown option(s) {', '.join(unknown)}"
                        + (f" (accepted: {', '.join(spec.options)})" if spec.options else ""))
    file = resolve_task_file(key, path, split)
    if spec.split_inside:
        if file.endswith(".csv"):
            return spec.loader(file, split=canonical_split(split) if split else None, **options)
        return spec.loader(file, **options)
    return spec.loader(file, **options)
