"""QA task loaders for fine-tuning and evaluation: one record type (`QAExample`) for the
bundled synthetic QA (the default), NQ-open, TriviaQA, NarrativeQA, QASPER, QuALITY and
QMSum, read from the user's local files in their usual formats by `load_task(name, path,
split=None, **options)`. Bad files raise `UserError` naming file, line and field.
"""
from megatron_retro.data.tasks.example import QAExample
from megatron_retro.data.tasks.registry import (DEFAULT_TASK, TASKS, canonical_split,
                                                load_task, resolve_task_file, task_names)

__all__ = ["QAExample", "DEFAULT_TASK", "TASKS", "canonical_split", "load_task",
           "resolve_task_file", "task_names"]
