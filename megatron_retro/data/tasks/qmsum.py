"""QMSum loader: query-based summarisation of a meeting transcript.

``data/ALL/jsonl/{train,val,test}.jsonl`` (github.com/Yale-LILY/QMSum) is JSON lines, one
meeting per line::

    {"topic_list": [{"topic": "...", "relevant_text_span": [["0", "19"]]}],
     "general_query_list": [{"query": "Summarize the whole meeting.", "answer": "..."}],
     "specific_query_list": [{"query": "What did the group discuss about ...?",
                              "answer": "...", "relevant_text_span": [["35", "61"]]}],
     "meeting_transcripts": [{"speaker": "Project Manager", "content": "Okay ..."}, ...]}

Every general and specific query is one example whose context is the whole transcript
(``speaker: content`` per turn); meetings have no id, so ids are ``<file>:<line>:g<i>`` /
``:s<i>``. Turns with empty content (a few in the release) are kept as ``speaker:``.
"""
from __future__ import annotations

import os
from typing import Iterator

from megatron_retro.data.tasks.example import QAExample
from megatron_retro.data.tasks.reader import Fields, iter_jsonl


def load_qmsum(path: str) -> Iterator[QAExample]:
    stem = os.path.basename(path).split(".")[0]
    for lineno, obj in iter_jsonl(path):
        r = Fields(path, lineno, obj)
        turns = r.items("meeting_transcripts")
        if not turns:
            r.fail("field 'meeting_transcripts' is an empty list")
        transcript = "\n".join(f"{t.text('speaker')}: {t.get('content', str)}".rstrip()
                               for t in turns)
        n = 0
        for kind, key in (("g", "general_query_list"), ("s", "specific_query_list")):
            for i, q in enumerate(r.items(key) if key in obj else []):
                meta = {"query_type": "general" if kind == "g" else "specific", "line": lineno}
                if "relevant_text_span" in q.obj:
                    meta["relevant_text_span"] = q.get("relevant_text_span", list)
                n += 1
                yield QAExample(id=f"{stem}:{lineno}:{kind}{i}", question=q.text("query"),
                                answers=[q.text("answer")], task="qmsum", context=transcript,
                                meta=meta)
        if n == 0:
            r.fail("no queries (general_query_list and specific_query_list missing or empty)")
