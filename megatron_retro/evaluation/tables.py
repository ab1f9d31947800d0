"""Result tables of the experiment grid, written atomically.

The pieces live beside this module: ``score_cells`` (one ``ScoreRow`` per finished run;
``aggregate`` groups the seeds of each (task, model, size, method) into a ``Cell`` with the mean
and the spread over seeds), ``findings`` (the paper's claims checked with mean ± spread bands and
a floor) and ``plots`` (``build_figure``: score vs model size, a panel per PEFT method).  Here:

- `markdown_table(cells, spread)`: one row per cell, scores x100 as ``mean ± std`` (sample
  standard deviation, ddof=1) or ``mean (min–max)``; the header line says which and how many
  seeds; a cell with one seed shows its mean only;
- `write_report(rows, out_dir, ...)`: ``results.md`` (the table, then the findings) plus
  ``<task>_<metric>_vs_size.png`` per task and metric, each written to a temporary file in
  ``out_dir`` and renamed into place, so an interrupted run never leaves a half-written table or
  image.

Score rows are kept as JSON lines (`write_score_rows` / `read_score_rows`), one object per
run: ``{"task": "bundled", "model": "retro", "size": 12500000, "method": "lora",
"seed": 1, "scores": {"em": 0.31, "f1": 0.42, "rougeL": 0.44}, "top_answer": "1717",
"top_share": 0.12}`` (the most common normalised prediction and the share of questions given it;
both optional).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Iterable, List, Optional, Sequence

from megatron_retro.errors import UserError
from megatron_retro.evaluation.findings import Floor, findings, findings_markdown
from megatron_retro.evaluation.plots import build_figure
from megatron_retro.evaluation.score_cells import (METRIC_LABELS, MODEL_ORDER, Cell, ScoreRow, aggregate, check_spread,
                                                   format_value, metrics_of, size_label)
from megatron_retro.io_atomic import save_figure_atomic, write_text_atomic


def markdown_table(cells: Sequence[Cell], spread: str = "std",
                   metrics: Optional[Sequence[str]] = None) -> str:
    check_spread(spread)
    if not cells:
        raise UserError("no scores to tabulate")
    metrics = list(metrics or metrics_of(cells))
    how = ("mean ± sample standard deviation (n−1)" if spread == "std"
           else "mean (min–max)")
    n_seeds = sorted({len(c.seeds) for c in cells})
    seeds_txt = "/".join(map(str, n_seeds))
    lines = [f"Scores ×100, {how} over {seeds_txt} seed(s) per cell; a single seed shows "
             f"its value only.", "",
             "| Task | Model | Size | Method | Seeds | "
             + " | ".join(METRIC_LABELS.get(m, m) for m in metrics) + " |",
             "|" + "---|" * (5 + len(metrics))]
    for c in cells:
        values = " | ".join(format_value(c, m, spread) for m in metrics)
        lines.append(f"| {c.task} | {c.model.upper() if c.model in MODEL_ORDER else c.model} "
                     f"| {size_label(c.size)} | {c.method} | {len(c.seeds)} | {values} |")
    return "\n".join(lines) + "\n"



def write_report(rows: Iterable[ScoreRow], out_dir: str, spread: str = "std",
                 metrics: Optional[Sequence[str]] = None,
                 findings_metric: str = "f1", floor: Optional[Floor] = None) -> List[str]:
    """results.md (the table, then the paper's claims checked on ``findings_metric``) and
    one PNG per (task, metric) in ``out_dir``; returns the paths."""
    cells = aggregate(rows)
    metrics = list(metrics or metrics_of(cells))
    text = markdown_table(cells, spread, metrics)
    found = findings(cells, findings_metric, spread, floor=floor) if findings_metric in metrics else []
    if found:
        text += "\n" + findings_markdown(found, findings_metric, spread, floor)
    paths = [write_text_atomic(os.path.join(out_dir, "results.md"), text)]
    for task in sorted({c.task for c in cells}):
        for m in metrics:
            if any(c.task == task and m in c.mean for c in cells):
                fig = build_figure(cells, task, m, spread)
                paths.append(save_figure_atomic(
                    fig, os.path.join(out_dir, f"{task}_{m}_vs_size.png")))
    return paths



def write_score_rows(rows: Iterable[ScoreRow], path: str) -> str:
    """All rows as JSON lines, atomically (rewrite the file to add a finished run)."""
    return write_text_atomic(path, "".join(json.dumps(asdict(r)) + "\n" for r in rows))



def read_score_rows(path: str) -> List[ScoreRow]:
    """Rows written by `write_score_rows`; UserError naming file, line and field."""
    from megatron_retro.data.tasks.reader import Fields, iter_jsonl

    rows = []
    for lineno, obj in iter_jsonl(path):
        r = Fields(path, lineno, obj)
        scores = r.get("scores", dict)
        for k, v in scores.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                r.fail(f"field 'scores.{k}' must be a number in [0, 1], got {v!r}")
        size = r.get("size", float)
        if size <= 0:
            r.fail(f"field 'size' must be > 0, got {size}")
        share = r.get("top_share", float, optional=True)
        if share is not None and not 0 <= share <= 1:
            r.fail(f"field 'top_share' must be in [0, 1], got {share}")
        top = r.get("top_answer", str, optional=True)
        decoder = r.get("decoder", float, optional=True)
        rows.append(ScoreRow(model=r.text("model"), size=size, method=r.text("method"),
                             seed=r.get("seed", int), scores=dict(scores),
                             task=r.text("task"), top_answer=top, top_share=share,
                             decoder=decoder))
    return rows
