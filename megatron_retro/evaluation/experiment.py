"""`megatron-retro experiment --config configs/experiments/<name>.yaml`: the paper's grid, resumable.

Reads top to bottom:
1. the task corpus's retrieval database (built once per tokenizer: a model with its own, e.g. Gemma's
   next to the tiny models, reads the corpus, passages and questions tokenized with it, and its own
   question caches) and, with ``retrieval_shards > 0``, the
   sharded retrieval service started on it; the top-k passages of every question of the train,
   valid and test splits are retrieved once through it and cached, so every cell reads the same
   retrieved set (GPT inline, RETRO as neighbours); the service stays up until the run ends
   (stopped also on failure);
2. the base models, each just before its first cell: a given checkpoint, or pretraining here
   (resumed if interrupted; RETRO can start from a GPT base of the grid: retro-fitting); a RETRO
   whose ``retro.retrieval_dir`` is served fetches its neighbours through that service
   (``retrieval.mode=service``), and the log shows its queries per DP rank and wait share;
3. the cells, model x method x seed: zero-shot (once per model: greedy decoding is
   deterministic) or fine-tuning + evaluation.  A finished cell is a ``result.json`` written
   atomically in ``<out_dir>/cells/<model>/<method>/seed<seed>/``; a cell without one is run
   again from scratch, a cell with one is skipped — so a killed experiment resumes where it stopped
   and never reports a half-finished run;
4. the report: ``scores.jsonl`` (one row per cell), ``results.md`` (mean ± spread over seeds and
   the paper's findings) and ``<task>_<metric>_vs_size.png``, all written atomically.

The phases live beside this module: ``experiment_retrieval`` (1), ``experiment_cells`` (2, 3);
this one plans, runs them in order and writes the report.

Collective under torchrun (every rank runs the grid; rank 0 writes).
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Optional

from megatron_retro.evaluation.experiment_cells import pretrain_base, run_cell
from megatron_retro.evaluation.experiment_config import ExperimentConfig, ExperimentModel
from megatron_retro.evaluation.experiment_retrieval import Services, prepare_model_retrieval
from megatron_retro.evaluation.grid_runs import barrier, cell_dir, grid, is_writer, log, model_config

__all__ = ["run_experiment", "plan_lines", "report"]


def plan_lines(exp: ExperimentConfig) -> List[str]:
    """What the run is about to do, phase by phase, with the expected minutes when configured."""
    minutes = exp.phase_minutes()

    def eta(phase: str) -> str:
        return f" (~{minutes[phase]:g} min)" if phase in minutes else ""

    bases = []
    for m in exp.models:
        if m.checkpoint:
            bases.append(f"{m.name}: given checkpoint")
        else:
            start = (f" from {m.init_from}" + (f" step {m.init_from_step}" if m.init_from_step is not None else "")
                     if m.init_from else "")
            bases.append(f"{m.name}: {m.pretrain_steps} steps{start}")
    cells = grid(exp)
    done = sum(os.path.isfile(os.path.join(cell_dir(exp, m.name, x, s), "result.json")) for m, x, s in cells)
    service = (f"{exp.retrieval_shards}-shard retrieval service" if exp.retrieval_shards else "in-process search")
    ppl = ""
    if exp.perplexity_pairs and exp.perplexity_seeds:
        ppl = (f"; then held-out perplexity of {', '.join(exp.perplexity_pairs)} at equal steps "
               f"({exp.perplexity_steps}) and equal compute x seeds {exp.perplexity_seeds}{eta('perplexity')}")
    lines = [f"plan of {exp.name} -> {exp.out_dir}",
             f"1. retrieval database of the task corpus + question retrieval ({service}){eta('retrieval')}",
             f"2. pretraining, each base just before its model's first cell (resumed / reused when done): "
             f"{'; '.join(bases)}{eta('pretrain')}",
             f"3. {len(cells)} cells ({len(exp.models)} models x {', '.join(exp.methods)} x seeds "
             f"{exp.seeds}; {done} already done){eta('cells')}{ppl}",
             "4. report: results.md, scores.jsonl and plots"]
    if minutes:
        lines.append(f"expected total ~{sum(minutes.values()):g} min on an idle 2-core machine (from scratch)")
    return lines


def run_experiment(exp: ExperimentConfig, progress: bool = True, max_cells: Optional[int] = None) -> dict:
    """Collective: run (or resume) the grid and write the report; returns a summary."""
    t0 = time.perf_counter()
    os.makedirs(exp.out_dir, exist_ok=True)
    for line in plan_lines(exp):
        log(line)
    services = Services()
    try:
        return _run_phases(exp, services, progress, max_cells, t0)
    finally:
        services.stop()  # up from question retrieval to here: RETRO pretraining reads it too


class PhaseClock:
    """Wall seconds spent per phase in this invocation (work reused from an earlier run costs ~0), so
    a user can set ``expected_minutes`` from a measured run: :meth:`line` reads ``phase=minutes``."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}

    def timed(self, phase: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def minutes(self) -> Dict[str, float]:
        return {phase: round(sec / 60, 1) for phase, sec in self.seconds.items()}

    def line(self) -> str:
        return " ".join(f"{phase}={minutes:g}" for phase, minutes in self.minutes().items())


def _run_phases(exp: ExperimentConfig, services: Services, progress: bool,
                max_cells: Optional[int], t0: float) -> dict:
    clock = PhaseClock()
    retrieval = clock.timed("retrieval", prepare_model_retrieval, exp, progress, services)   # model -> db, splits
    bases: Dict[str, str] = {}
    by_name = {m.name: m for m in exp.models}

    def base_of(model: ExperimentModel) -> str:
        """Pretrained (or reused) just before the model's first cell, after the base it starts from."""
        if model.name not in bases:
            if model.init_from:
                base_of(by_name[model.init_from])
            bases[model.name] = clock.timed("pretrain", pretrain_base, exp, model, bases, progress, services)
        return bases[model.name]

    records, ran = [], 0
    for model, method, seed in grid(exp):
        done = os.path.join(cell_dir(exp, model.name, method, seed), "result.json")
        if os.path.isfile(done):
            with open(done, encoding="utf-8") as f:
                records.append(json.load(f))
            from megatron_retro.evaluation.experiment_suites import add_suite, missing_suite

            if missing_suite(exp, model, method, seed):  # finished before `suites` named it: from its adapter
                log(f"cell {model.name} / {method} / seed {seed}: rag suite of the finished cell")
                add_suite(exp, model, method, seed, records[-1], progress)
            continue
        if max_cells is not None and ran >= max_cells:
            break
        log(f"cell {model.name} / {method} / seed {seed}")
        base = base_of(model)
        records.append(clock.timed("cells", run_cell, exp, model, base, method, seed, progress, services,
                                   retrieval[model.name]["db_dir"]))
        ran += 1
        s = records[-1]["scores"]
        share = records[-1].get("top_share") or 0.0
        log(f"  EM {100 * s['em']:.1f}  F1 {100 * s['f1']:.1f}  ROUGE-L {100 * s['rougeL']:.1f}  "
             f"({records[-1]['seconds']:.0f} s)"
             + (f"  degenerate: {100 * share:.0f}% of answers are {records[-1]['top_answer']!r}"
                if share >= exp.degenerate_share else ""))
    perplexity = []
    if exp.perplexity_pairs and exp.perplexity_seeds and not (max_cells is not None and ran >= max_cells):
        from megatron_retro.evaluation.perplexity_study import run_perplexity

        perplexity = clock.timed("perplexity", run_perplexity, exp, log)
    paths = []
    if is_writer():
        paths = report(exp, records, perplexity)
    barrier()
    log(f"minutes per phase in this run (reused work excluded; expected_minutes format): {clock.line()}")
    return {"cells": len(records), "ran": ran, "total_cells": len(grid(exp)), "report": paths,
            "retrieval": retrieval[exp.models[0].name], "seconds": round(time.perf_counter() - t0, 1),
            "phase_minutes": clock.minutes()}


def report(exp: ExperimentConfig, records: List[dict], perplexity: Optional[List[dict]] = None) -> List[str]:
    from megatron_retro.evaluation.findings import Floor, findings
    from megatron_retro.evaluation.score_cells import ScoreRow, aggregate
    from megatron_retro.evaluation.tables import write_report, write_score_rows

    rows = [ScoreRow(model=r["arch"], size=r["size"], method=r["method"], seed=r["seed"], scores=r["scores"],
                     task=r["task"], top_answer=r.get("top_answer"), top_share=r.get("top_share"),
                     decoder=r.get("decoder"))
            for r in records]
    write_score_rows(rows, os.path.join(exp.out_dir, "scores.jsonl"))
    floor = Floor(exp.floor_f1, exp.degenerate_share)
    found = findings(aggregate(rows), "f1", exp.spread, floor=floor)
    for f in found:  # the console says what results.md says
        log(f"finding: {f.summary('f1', exp.spread)}")
    if found and all(f.verdict == "no signal" for f in found):
        log("no signal: every compared cell is at the floor; these scores say nothing about the paper's findings")
    paths = write_report(rows, exp.out_dir, spread=exp.spread, floor=floor)
    if perplexity:
        from megatron_retro.evaluation.perplexity_study import perplexity_findings, perplexity_markdown
        from megatron_retro.io_atomic import write_text_atomic

        write_text_atomic(os.path.join(exp.out_dir, "perplexity.jsonl"),
                          "".join(json.dumps(r) + "\n" for r in perplexity))
        found = perplexity_findings(perplexity, exp.spread)
        for f in found:
            log(f"finding: RETRO perplexity < GPT [{f['pair']} {f['regime']}]: GPT {f['gpt'].mean['ppl']:.2f} vs "
                 f"RETRO {f['retro'].mean['ppl']:.2f} -> {f['verdict']}")
        with open(paths[0], encoding="utf-8") as fh:
            text = fh.read()
        write_text_atomic(paths[0], text + "\n" + perplexity_markdown(found))
    if "rag" in exp.suites:
        from megatron_retro.evaluation.experiment_suites import with_suites
        from megatron_retro.evaluation.rag_report import write_suite_report

        paths += write_suite_report(with_suites(exp, records), exp.out_dir)
    return paths
