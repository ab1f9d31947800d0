"""Phases 2 and 3 of an experiment: the base models (given, or pretrained here just before their
first cell) and the cells, model x method x seed: zero-shot or fine-tuning, then evaluation (and
the RAG suite when asked); a finished cell is its ``result.json``, written atomically last.

Collective under torchrun (every rank runs the cell; rank 0 writes).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Dict, Optional

from megatron_retro.config import RunConfig
from megatron_retro.evaluation.experiment_config import ExperimentConfig, ExperimentModel
from megatron_retro.evaluation.experiment_retrieval import Services, dp_size
from megatron_retro.evaluation.grid_runs import (barrier, cell_config, cell_dir, cell_settings, is_writer, log,
                                                 model_config, run_pretrain)


def size_key(cfg: RunConfig, vocab_size: int) -> float:
    """Parameters of the GPT decoder the model is built on (RETRO's encoder and cross-attention not
    counted): the findings pair a GPT with the RETRO built on the same decoder (the tables and
    plots show each model's own parameter count)."""
    from megatron_retro.models.gpt import padded_vocab_size
    from megatron_retro.planning.param_count import closed_form_gpt_params

    gpt = dataclasses.replace(cfg.model, arch="gpt")
    return float(closed_form_gpt_params(gpt, padded_vocab_size(vocab_size, gpt.make_vocab_size_divisible_by, 1)))


def _log_pretrain_retrieval(name: str, cfg: RunConfig, result) -> None:
    """One line: the RETRO run's neighbour queries per DP rank and its retrieval wait share."""
    from megatron_retro.training.metrics import METRICS_FILE, read_metrics

    path = os.path.join(cfg.out_dir, METRICS_FILE)
    if not is_writer() or not os.path.isfile(path):
        return
    rows = read_metrics(path)
    queries = sum(r.get("retrieval_queries", 0) for r in rows)
    wait = sum(r.get("retrieval_wait_s", 0.0) for r in rows)
    dp = dp_size(cfg)
    share = result.retrieval_wait_share
    log(f"pretrain {name}: neighbours {cfg.retrieval.mode}"
         + (f" ({cfg.retrieval.endpoints})" if cfg.retrieval.mode == "service" else "")
         + f": {int(queries)} chunk queries, {int(queries) // dp} per DP rank x {dp}; waited {wait:.2f} s, "
         f"retrieval wait share {'-' if share is None else f'{100 * share:.1f}%'}")


def pretrain_base(exp: ExperimentConfig, model: ExperimentModel, bases: Dict[str, str], progress: bool,
                  services: Optional[Services] = None) -> str:
    """The model's base checkpoint: given, or pretrained here (resumed when interrupted); a RETRO
    whose database one of ``services`` serves fetches its neighbours through that service."""
    from megatron_retro.training.checkpointing import newest_checkpoint, read_state

    if model.checkpoint:
        return exp.resolve(model.checkpoint)
    out = os.path.join(exp.out_dir, "pretrain", model.name)
    extra = [f"train.steps={model.pretrain_steps}", f"out_dir={out}", *exp.pretrain_overrides]
    if model.init_from:
        start = bases[model.init_from]
        if model.init_from_step is not None:
            from megatron_retro.training.checkpointing import checkpoint_name

            start = os.path.join(os.path.dirname(start), checkpoint_name(model.init_from_step))
        extra.append(f"checkpoint.load={start}")
    cfg = model_config(exp, model, *extra)
    done = newest_checkpoint(cfg.checkpoint_dir)
    if done is not None and read_state(done).get("step", 0) >= model.pretrain_steps:
        log(f"pretrain {model.name}: reusing {done}")
        return done
    retro = cfg.model.arch == "retro"
    if retro and services is not None and cfg.retro.retrieval_dir:
        cfg = services.apply(cfg, cfg.retro.retrieval_dir)
    log(f"pretrain {model.name}: {model.pretrain_steps} steps ({cfg.model.arch})")
    result = run_pretrain(cfg, progress)
    if retro:
        _log_pretrain_retrieval(model.name, cfg, result)
    return result.checkpoint


def run_cell(exp: ExperimentConfig, model: ExperimentModel, base: str, method: str, seed: int,
             progress: bool, services: Optional[Services] = None, qa_db: Optional[str] = None) -> dict:
    """Fine-tune (unless zero-shot) and evaluate one cell; returns its result record.

    With ``services`` serving the task corpus's database ``qa_db``, a split not yet cached is
    searched through that service (as question retrieval was); the record says which mode
    searched the evaluated passages (``retrieval.eval_passages``; a cache keeps its filler's)."""
    from megatron_retro.evaluation.answer_eval import evaluate, evaluate_model, write_eval
    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.training.finetune import finetune
    from megatron_retro.training.qa_data import load_split

    out = cell_dir(exp, model.name, method, seed)
    if is_writer() and os.path.isdir(out):
        shutil.rmtree(out)  # an interrupted attempt: start the cell again
    barrier()
    t0 = time.perf_counter()
    record = {"model": model.name, "method": method, "seed": seed, "base": base}
    rag, scored = None, {"base": base, "adapter": None}   # scored: the model the suite read
    try:
        cfg = _served(cell_config(exp, model, base, method, seed), services, qa_db)
        if method == "zero-shot":
            result = evaluate(cfg, base, progress=progress, write=False)
            params = base_params = result.info["params"]
            if "rag" in exp.suites:
                from megatron_retro.evaluation.rag_suite import evaluate_rag

                rag = evaluate_rag(cfg, base, examples=exp.suite_examples, progress=progress, write=False)
        else:
            peft_cfg = None if method == "none" else _peft_config(exp, method, seed)
            ft = finetune(cfg, peft_cfg, progress=progress, keep_engine=True)
            split = load_split(cfg, ft.qa, cfg.qa.eval_split, cfg.qa.eval_examples)
            result = evaluate_model(cfg, ft.engine.chunks, ft.qa, split, progress=progress)
            params = ft.total_params
            base_params = params if method == "none" else params - ft.trainable_params  # PEFT: frozen base
            if "rag" in exp.suites:
                from megatron_retro.evaluation.rag_suite import run_suite

                rag = run_suite(cfg, ft.engine.chunks, ft.qa, exp.suite_examples, progress=progress)
                scored = {"base": ft.checkpoint or base, "adapter": ft.adapter_dir}
            record["finetune"] = {"steps": ft.steps, "first_loss": ft.first_loss, "last_loss": ft.last_loss,
                                  "valid_loss": ft.valid_loss, "trainable_params": ft.trainable_params,
                                  "seconds": round(ft.seconds, 1), "data": ft.data}
    finally:
        destroy_parallel()
    if rag is not None:
        record["rag"] = rag["splits"]
    record.update(arch=cfg.model.arch, task=cfg.qa.task, size=base_params,
                  decoder=size_key(cfg, result.info["vocab_size"]), params=params, scores=result.scores, count=result.count,
                  gold_passage_retrieved=result.info.get("gold_passage_retrieved"),
                  retrieval={"mode": cfg.retrieval.mode, "eval_passages": result.info.get("passages_retrieved_by")},
                  top_answer=result.info.get("top_answer"), top_share=result.info.get("top_share"),
                  settings=cell_settings(cfg, method),
                  finetune_overrides=[] if method == "zero-shot" else exp.finetune_overrides_of(model, method),
                  seconds=round(time.perf_counter() - t0, 1))
    if is_writer():
        write_eval(out, result)
        if rag is not None:
            from megatron_retro.evaluation.rag_suite import write_suite

            write_suite(out, rag, f"{model.name} {method}", scored)
        from megatron_retro.io_atomic import write_text_atomic

        write_text_atomic(os.path.join(out, "result.json"), json.dumps(record, indent=1))  # the cell is done
    barrier()
    return record


def _served(cfg: RunConfig, services: Optional[Services], db_dir: Optional[str]) -> RunConfig:
    return services.apply(cfg, db_dir) if services is not None and db_dir else cfg


def _peft_config(exp: ExperimentConfig, method: str, seed: int):
    from megatron_retro.errors import UserError
    from megatron_retro.peft import make_peft_config
    from megatron_retro.peft.options import read_peft_yaml

    path = exp.peft_config_path(method)
    options = read_peft_yaml(path, f"PEFT config of method {method!r}",
                             hint=f" (set peft_configs: [{method}=<file>])")
    options.pop("method", None)
    from megatron_retro.peft.registry import get_method

    if "seed" in {f.name for f in dataclasses.fields(get_method(method).config_cls)}:
        options["seed"] = seed
    try:
        return make_peft_config(method, options)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
