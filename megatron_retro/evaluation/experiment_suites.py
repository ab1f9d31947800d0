"""An experiment's evaluation suites (``suites: [rag]``) on its finished cells, from what they saved.

A finished cell (``result.json``) names its base checkpoint; a PEFT cell saved its adapter in
``<cell>/adapter``, a full fine-tuning cell its checkpoint in ``<cell>/checkpoints``, and a
zero-shot cell is the base itself.  ``add_suite`` loads that model with the cell's own run config
(``experiment.cell_config``), runs the suite and writes ``<cell>/rag_suite.json`` (+ predictions,
table, plot) naming what it scored: base, adapter, base questions per split, judge.  A cell whose
stored suite names other settings (``suite_examples`` changed) is scored again.
``with_suites`` attaches each cell's stored suite to its record for the report
(``rag_report.write_suite_report``: a table and a noise plot over all seeds of every model x method).

Two users: the grid (a finished cell that lacks its suite gets it when the experiment is resumed
with ``suites: [rag]``) and `megatron-retro experiment --config E --suites-only rag`
(``run_suites_only``: the suite on the finished cells only — no pretraining, no fine-tuning, no
retrieval service; the base questions' passages come from the cached retrieval).
"""
from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple

from megatron_retro.evaluation.experiment_config import ExperimentConfig, ExperimentModel

SUITE_FILE = "rag_suite.json"
JUDGE = "reference"


def stored_suite(cell: str, exp: ExperimentConfig) -> Optional[dict]:
    """The splits of the cell's stored suite if it was scored with this experiment's settings, else None."""
    path = os.path.join(cell, SUITE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("examples") != exp.suite_examples or data.get("judge") != JUDGE:
        return None
    return data["splits"]


def cell_model(exp: ExperimentConfig, model: ExperimentModel, method: str, seed: int,
               record: dict) -> Tuple[object, str, Optional[str]]:
    """(run config, checkpoint, adapter) of a finished cell: what its evaluation read."""
    from megatron_retro.errors import UserError
    from megatron_retro.evaluation.grid_runs import cell_config, cell_dir
    from megatron_retro.training.checkpointing import newest_checkpoint

    cell = cell_dir(exp, model.name, method, seed)
    cfg = cell_config(exp, model, record["base"], method, seed)
    if method == "zero-shot":
        return cfg, record["base"], None
    if method == "none":
        checkpoint = newest_checkpoint(cfg.checkpoint_dir)
        if checkpoint is None:
            raise UserError(f"{cell}: full fine-tuning cell without a checkpoint in {cfg.checkpoint_dir}; "
                            f"delete {cell}/result.json to run the cell again")
        return cfg, checkpoint, None
    adapter = os.path.join(cell, "adapter")
    if not os.path.isdir(adapter):
        raise UserError(f"{cell}: {method} cell without its adapter ({adapter}); delete {cell}/result.json "
                        f"to run the cell again")
    return cfg, record["base"], adapter


def add_suite(exp: ExperimentConfig, model: ExperimentModel, method: str, seed: int, record: dict,
              progress: bool) -> dict:
    """Collective: the rag suite of one finished cell, loaded from disk; written beside its result.json."""
    import torch.distributed as dist

    from megatron_retro.evaluation.grid_runs import cell_dir
    from megatron_retro.evaluation.rag_suite import evaluate_rag, write_suite
    from megatron_retro.parallel.initialize import destroy_parallel

    cfg, load, adapter = cell_model(exp, model, method, seed, record)
    try:
        result = evaluate_rag(cfg, load, adapter, examples=exp.suite_examples, judge=JUDGE, progress=progress,
                              write=False)
    finally:
        destroy_parallel()
    if not dist.is_initialized() or dist.get_rank() == 0:
        write_suite(cell_dir(exp, model.name, method, seed), result, f"{model.name} {method}",
                    {"base": load, "adapter": adapter})
    return result["splits"]


def with_suites(exp: ExperimentConfig, records: List[dict]) -> List[dict]:
    """The records, each with its cell's stored suite (``rag``) when one matches the settings."""
    from megatron_retro.evaluation.grid_runs import cell_dir

    out = []
    for r in records:
        splits = stored_suite(cell_dir(exp, r["model"], r["method"], r["seed"]), exp)
        out.append({**{k: v for k, v in r.items() if k != "rag"}, **({"rag": splits} if splits else {})})
    return out


def missing_suite(exp: ExperimentConfig, model: ExperimentModel, method: str, seed: int) -> bool:
    from megatron_retro.evaluation.grid_runs import cell_dir

    return "rag" in exp.suites and stored_suite(cell_dir(exp, model.name, method, seed), exp) is None


def run_suites_only(exp: ExperimentConfig, log, progress: bool = True) -> dict:
    """Collective: the rag suite of every finished cell of the grid (scored again only when missing or
    stale), then ``rag_suite.md`` and ``rag_noise.png`` in the experiment's directory."""
    import time

    from megatron_retro.errors import UserError
    from megatron_retro.evaluation.grid_runs import barrier as _barrier, cell_dir, grid, is_writer as _is_writer

    t0 = time.perf_counter()
    records, scored, unfinished = [], 0, []
    for model, method, seed in grid(exp):
        done = os.path.join(cell_dir(exp, model.name, method, seed), "result.json")
        if not os.path.isfile(done):
            unfinished.append(f"{model.name}/{method}/seed{seed}")
            continue
        with open(done, encoding="utf-8") as f:
            record = json.load(f)
        if missing_suite(exp, model, method, seed):
            log(f"rag suite: {model.name} / {method} / seed {seed} ({exp.suite_examples} questions per split)")
            add_suite(exp, model, method, seed, record, progress)
            scored += 1
        records.append(record)
    if not records:
        raise UserError(f"{exp.out_dir}: no finished cell of experiment {exp.name} (run `megatron-retro "
                        f"experiment --config ...` first)")
    if unfinished:
        log(f"rag suite: {len(unfinished)} cell(s) not finished, left out: {', '.join(unfinished)}")
    _barrier()  # every suite file is written
    paths = []
    if _is_writer():
        from megatron_retro.evaluation.rag_report import write_suite_report

        paths = write_suite_report(with_suites(exp, records), exp.out_dir)
    _barrier()
    return {"cells": len(records), "scored": scored, "unfinished": len(unfinished), "report": paths,
            "seconds": round(time.perf_counter() - t0, 1)}
