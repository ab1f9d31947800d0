"""Task loaders: peak memory and time of the streaming readers against loading the whole
file with `json.load` / a list of `json.loads`, side by side in one run (ratios).

    python benchmarks/bench_task_loaders.py --records 20000 [--markdown]

Writes synthetic files in the TriviaQA original JSON layout (each record with a few search
result snippets, as in the real files) and the NQ-open JSONL layout to a temp dir, then for
each: (a) baseline = decode everything into Python first, then build the QAExamples;
(b) `load_task(...)` streaming. Peak memory is Python's traced allocations (tracemalloc).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tracemalloc

from megatron_retro.data.tasks import load_task
from megatron_retro.data.tasks.open_domain import _trivia_record
from megatron_retro.data.tasks.reader import Fields


def _trivia(n: int) -> dict:
    snippet = "lorem ipsum dolor sit amet " * 12
    return {"Data": [{"Question": f"Question number {i}?", "QuestionId": f"tc_{i}",
                      "Answer": {"Value": f"answer {i}", "Aliases": [f"alias {i}", f"a{i}"],
                                 "NormalizedAliases": [f"alias {i}"], "Type": "FreeForm"},
                      "SearchResults": [{"Description": snippet, "Rank": r, "Title": "t",
                                         "Url": "http://example.org"} for r in range(5)],
                      "EntityPages": []} for i in range(n)],
            "Domain": "Web", "Version": 1.0, "Split": "dev"}


def _measure(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    n = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return n, dt, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tq = os.path.join(d, "web-dev.json")
        with open(tq, "w") as f:
            json.dump(_trivia(args.records), f, indent=1)
        nq = os.path.join(d, "NQ-open.dev.jsonl")
        with open(nq, "w") as f:
            for i in range(args.records):
                f.write(json.dumps({"question": f"q {i} " + "w " * 40,
                                    "answer": [f"a {i}", f"b {i}"]}) + "\n")

        def trivia_baseline():
            data = json.load(open(tq))["Data"]
            return sum(1 for i, rec in enumerate(data)
                       if _trivia_record(Fields(tq, 0, rec), 0, str(i)))

        def nq_baseline():
            rows = [json.loads(line) for line in open(nq)]
            return sum(1 for _ in rows)

        results = [
            ("TriviaQA JSON", os.path.getsize(tq), _measure(trivia_baseline),
             _measure(lambda: sum(1 for _ in load_task("triviaqa", tq)))),
            ("NQ-open JSONL", os.path.getsize(nq), _measure(nq_baseline),
             _measure(lambda: sum(1 for _ in load_task("nq_open", nq)))),
        ]
    head = ("| file | MB | records | peak MB json.load | peak MB streaming | memory ratio | "
            "s json.load | s streaming | time ratio |")
    print(head)
    print("|" + "---|" * 9)
    for name, size, (n0, t0, m0), (n1, t1, m1) in results:
        assert n0 == n1 == args.records, (n0, n1)
        print(f"| {name} | {size / 1e6:.1f} | {n1} | {m0 / 1e6:.1f} | {m1 / 1e6:.1f} | "
              f"{m0 / m1:.1f}x | {t0:.2f} | {t1:.2f} | {t1 / t0:.2f} |")


if __name__ == "__main__":
    main()
