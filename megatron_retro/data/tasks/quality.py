"""QuALITY loader: multiple-choice questions about a long article.

``QuALITY.v1.0.1.htmlstripped.{train,dev}`` (github.com/nyu-mll/quality) is JSON lines, one
article per line with all its questions::

    {"article_id": "51650", "set_unique_id": "51650_...", "title": "Grandma Perkins ...",
     "article": "<article text>", "source": "Gutenberg", ...,
     "questions": [{"question": "Why does ...?", "question_unique_id": "51650_XZ2_1",
                    "options": ["a", "b", "c", "d"], "gold_label": 2, "writer_label": 2,
                    "difficult": 0, "validation": [...], "speed_validation": [...]}]}

``gold_label`` is 1-based; the answer is that option. The unlabelled test split has no
``gold_label`` and is rejected (nothing to score against).
"""
from __future__ import annotations

from typing import Iterator

from megatron_retro.data.tasks.example import QAExample
from megatron_retro.data.tasks.reader import Fields, iter_jsonl


def load_quality(path: str) -> Iterator[QAExample]:
    for lineno, obj in iter_jsonl(path):
        r = Fields(path, lineno, obj)
        article, article_id = r.text("article"), r.text("article_id")
        questions = r.items("questions")
        if not questions:
            r.fail("field 'questions' is an empty list")
        for q in questions:
            options = q.texts("options")
            if "gold_label" not in q.obj:
                q.fail(f"missing field {q.name('gold_label')!r} (the QuALITY test split is "
                       f"unlabelled)")
            gold = q.get("gold_label", int)
            if not 1 <= gold <= len(options):
                q.fail(f"field {q.name('gold_label')!r} = {gold}: must be in 1..{len(options)}")
            qid = (q.text("question_unique_id") if "question_unique_id" in q.obj
                   else f"{article_id}:{q.prefix}")
            yield QAExample(id=qid, question=q.text("question"), answers=[options[gold - 1]],
                            task="quality", context=article, options=list(options),
                            meta={"article_id": article_id, "gold_index": gold - 1,
                                  "difficult": bool(q.obj.get("difficult", 0)),
                                  "line": lineno})
