"""The one record type every QA task loader yields: `QAExample`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class QAExample:
    """One question with its gold answers, in a task-independent form.

    ``answers`` holds every accepted gold answer (at least one, none empty; EM/F1/ROUGE-L take
    the max over them). ``context`` is the task's own reading text when it has one (the
    NarrativeQA summary or story, the QASPER paper, the QuALITY article, the QMSum transcript);
    open-domain tasks (NQ-open, TriviaQA, bundled) leave it None and rely on retrieval.
    ``options`` are the multiple-choice options (QuALITY), the gold one among ``answers``.
    ``meta`` keeps task-specific extras (answer types, gold document ids, source line, ...).
    """

    id: str
    question: str
    answers: List[str]
    task: str
    context: Optional[str] = None
    options: Optional[List[str]] = None
    meta: Dict[str, Any] = field(default_factory=dict)
