"""`megatron-retro experiment --config configs/experiments/<name>.yaml`: the paper's grid, resumable.

Reads top to bottom:
1. the task corpus's retrieval database (built once) and, with ``retrieval_shards > 0``, the
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

Collective under torchrun (every rank runs the grid; rank 0 writes).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Dict, List, Optional

from megatron_retro.config import RunConfig
from megatron_retro.evaluation.experiment_config import ExperimentConfig, ExperimentModel
from megatron_retro.evaluation.grid_runs import barrier as _barrier
from megatron_retro.evaluation.grid_runs import cell_config, cell_dir, grid  # noqa: F401 (public here too)
from megatron_retro.evaluation.grid_runs import is_writer as _is_writer
from megatron_retro.evaluation.grid_runs import model_config, run_pretrain




def _log(msg: str) -> None:
    if _is_writer():
        print(f"[experiment] {msg}", flush=True)


def size_key(cfg: RunConfig, vocab_size: int) -> float:
    """Parameters of the GPT decoder the model is built on (RETRO's encoder and cross-attention not
    counted): the findings pair a GPT with the RETRO built on the same decoder (the tables and
    plots show each model's own parameter count)."""
    from megatron_retro.models.gpt import padded_vocab_size
    from megatron_retro.planning.param_count import closed_form_gpt_params

    gpt = dataclasses.replace(cfg.model, arch="gpt")
    return float(closed_form_gpt_params(gpt, padded_vocab_size(vocab_size, gpt.make_vocab_size_divisible_by, 1)))


# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Services:
    """The experiment's retrieval services, up from question retrieval to the end of the run.

    One service per retrieval database a phase reads: the task corpus's (questions) and, when a
    RETRO model pretrained here reads another database that is already built, that one too (a
    RETRO run that reads the task corpus's database — both demos — shares its service).
    ``endpoints`` is known on every rank; rank 0 runs the servers (``running``).
    """

    token_file: str = ""
    endpoints: Dict[str, str] = dataclasses.field(default_factory=dict)  # realpath(db dir) -> endpoints.json
    running: list = dataclasses.field(default_factory=list)

    def apply(self, cfg: RunConfig, db_dir: str) -> RunConfig:
        """``cfg`` reading ``db_dir`` through its service (unchanged if none serves it)."""
        endpoints = self.endpoints.get(os.path.realpath(db_dir))
        if endpoints is None:
            return cfg
        return dataclasses.replace(cfg, retrieval=dataclasses.replace(
            cfg.retrieval, mode="service", endpoints=endpoints, token_file=self.token_file))

    def stop(self) -> None:
        while self.running:
            self.running.pop().stop()


def _retro_dbs(exp: ExperimentConfig) -> List[str]:
    """Retrieval databases of the RETRO models pretrained here (those that name theirs)."""
    out = []
    for model in exp.models:
        if model.checkpoint:
            continue
        cfg = model_config(exp, model)
        if cfg.model.arch == "retro" and cfg.retro.retrieval_dir:
            out.append(cfg.retro.retrieval_dir)
    return out


def _start_services(exp: ExperimentConfig, qa_db: str, services: Services) -> None:
    """Collective (parallel state up): rank 0 starts a service per database; all ranks learn the endpoints."""
    import secrets

    from megatron_retro.retrieval.sharding import load_manifest

    root = _mkdir(os.path.join(exp.out_dir, "retrieval"))
    services.token_file = os.path.join(root, "token")
    dbs = [qa_db] + [d for d in _retro_dbs(exp)  # a database not built yet is searched in-process
                     if os.path.isfile(os.path.join(d, "index", "manifest.json"))]
    if _is_writer():
        token = secrets.token_hex(16)
        fd = os.open(services.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        os.environ["MEGATRON_RETRO_RETRIEVAL_TOKEN"] = token
    for db in dbs:
        key = os.path.realpath(db)
        if key in services.endpoints:
            continue
        name = "" if not services.endpoints else "-" + os.path.basename(key)
        endpoints = os.path.join(root, f"endpoints{name}.json")
        services.endpoints[key] = endpoints
        if _is_writer():
            from megatron_retro.retrieval.service.launcher import start_service

            index_dir = os.path.join(db, "index")
            shards = load_manifest(index_dir)["num_shards"]
            service = start_service(index_dir, shards, replicas=exp.retrieval_replicas,
                                    token=os.environ["MEGATRON_RETRO_RETRIEVAL_TOKEN"],
                                    log_dir=_mkdir(os.path.join(root, "logs" + name)) if name else root)
            services.running.append(service)
            service.write(endpoints)
            _log(f"retrieval service on {db}: {shards} shard(s) x {exp.retrieval_replicas} replica(s) on loopback")
    _barrier()  # the endpoints files exist for every rank


def prepare_retrieval(exp: ExperimentConfig, cfg: RunConfig, progress: bool,
                      services: Optional[Services] = None) -> dict:
    """Build the task corpus's DB, retrieve (through the service) and cache every split's passages.

    With ``services`` the service(s) stay up for the later phases (the caller stops them);
    without, the service is stopped on return."""
    from megatron_retro.parallel.initialize import destroy_parallel, initialize_parallel
    from megatron_retro.training.qa_data import describe, load_split, prepare_qa

    initialize_parallel(cfg.parallel, seed=cfg.train.seed)
    t0 = time.perf_counter()
    qa = prepare_qa(cfg, num_shards=max(1, exp.retrieval_shards))
    info = {"db_dir": qa.db_dir, "db_seconds": round(time.perf_counter() - t0, 1)}
    own = services is None
    services = Services() if own else services
    try:
        if exp.retrieval_shards and not qa.own_document:  # own documents: no index
            _start_services(exp, qa.db_dir, services)
            cfg = services.apply(cfg, qa.db_dir)
            info["service"] = {"shards": exp.retrieval_shards, "replicas": exp.retrieval_replicas,
                               "endpoints": services.endpoints[os.path.realpath(qa.db_dir)]}
        t0 = time.perf_counter()
        splits = {}
        for split, limit in ((cfg.qa.train_split, cfg.qa.train_examples), ("valid", 0),
                             (cfg.qa.eval_split, cfg.qa.eval_examples)):
            splits[split] = describe(load_split(cfg, qa, split, limit))
        info["retrieval_seconds"] = round(time.perf_counter() - t0, 1)
        info["splits"] = splits
        dp = _dp_size(cfg)
        n = sum(s["examples"] for s in splits.values())
        _log(f"question retrieval ({cfg.retrieval.mode}): {n} questions over {dp} DP rank(s), "
             f"~{n // dp} per rank (cached splits are not searched again), {info['retrieval_seconds']} s")
    finally:
        if own:
            services.stop()
        destroy_parallel()
    return info


def _dp_size(cfg: RunConfig) -> int:
    """Data-parallel ranks of a run of this job (torchrun's WORLD_SIZE / model-parallel size)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")) // (cfg.parallel.tp * cfg.parallel.pp))


def _log_pretrain_retrieval(name: str, cfg: RunConfig, result) -> None:
    """One line: the RETRO run's neighbour queries per DP rank and its retrieval wait share."""
    from megatron_retro.training.metrics import METRICS_FILE, read_metrics

    path = os.path.join(cfg.out_dir, METRICS_FILE)
    if not _is_writer() or not os.path.isfile(path):
        return
    rows = read_metrics(path)
    queries = sum(r.get("retrieval_queries", 0) for r in rows)
    wait = sum(r.get("retrieval_wait_s", 0.0) for r in rows)
    dp = _dp_size(cfg)
    share = result.retrieval_wait_share
    _log(f"pretrain {name}: neighbours {cfg.retrieval.mode}"
         + (f" ({cfg.retrieval.endpoints})" if cfg.retrieval.mode == "service" else "")
         + f": {int(queries)} chunk queries, {int(queries) // dp} per DP rank x {dp}; waited {wait:.2f} s, "
         f"retrieval wait share {'-' if share is None else f'{100 * share:.1f}%'}")


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


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
        _log(f"pretrain {model.name}: reusing {done}")
        return done
    retro = cfg.model.arch == "retro"
    if retro and services is not None and cfg.retro.retrieval_dir:
        cfg = services.apply(cfg, cfg.retro.retrieval_dir)
    _log(f"pretrain {model.name}: {model.pretrain_steps} steps ({cfg.model.arch})")
    result = run_pretrain(cfg, progress)
    if retro:
        _log_pretrain_retrieval(model.name, cfg, result)
    return result.checkpoint


# ----------------------------------------------------------------------------------------------




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
    if _is_writer() and os.path.isdir(out):
        shutil.rmtree(out)  # an interrupted attempt: start the cell again
    _barrier()
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
                  seconds=round(time.perf_counter() - t0, 1))
    if _is_writer():
        write_eval(out, result)
        if rag is not None:
            from megatron_retro.evaluation.rag_suite import write_suite

            write_suite(out, rag, f"{model.name} {method}", scored)
        from megatron_retro.io_atomic import write_text_atomic

        write_text_atomic(os.path.join(out, "result.json"), json.dumps(record, indent=1))  # the cell is done
    _barrier()
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




def report(exp: ExperimentConfig, records: List[dict], perplexity: Optional[List[dict]] = None) -> List[str]:
    from megatron_retro.evaluation.tables import (Floor, ScoreRow, aggregate, findings, write_report,
                                                  write_score_rows)

    rows = [ScoreRow(model=r["arch"], size=r["size"], method=r["method"], seed=r["seed"], scores=r["scores"],
                     task=r["task"], top_answer=r.get("top_answer"), top_share=r.get("top_share"),
                     decoder=r.get("decoder"))
            for r in records]
    write_score_rows(rows, os.path.join(exp.out_dir, "scores.jsonl"))
    floor = Floor(exp.floor_f1, exp.degenerate_share)
    found = findings(aggregate(rows), "f1", exp.spread, floor=floor)
    for f in found:  # the console says what results.md says
        _log(f"finding: {f.summary('f1', exp.spread)}")
    if found and all(f.verdict == "no signal" for f in found):
        _log("no signal: every compared cell is at the floor; these scores say nothing about the paper's findings")
    paths = write_report(rows, exp.out_dir, spread=exp.spread, floor=floor)
    if perplexity:
        from megatron_retro.evaluation.perplexity_study import perplexity_findings, perplexity_markdown
        from megatron_retro.io_atomic import write_text_atomic

        write_text_atomic(os.path.join(exp.out_dir, "perplexity.jsonl"),
                          "".join(json.dumps(r) + "\n" for r in perplexity))
        found = perplexity_findings(perplexity, exp.spread)
        for f in found:
            _log(f"finding: RETRO perplexity < GPT [{f['pair']} {f['regime']}]: GPT {f['gpt'].mean['ppl']:.2f} vs "
                 f"RETRO {f['retro'].mean['ppl']:.2f} -> {f['verdict']}")
        with open(paths[0], encoding="utf-8") as fh:
            text = fh.read()
        write_text_atomic(paths[0], text + "\n" + perplexity_markdown(found))
    if "rag" in exp.suites:
        from megatron_retro.evaluation.experiment_suites import with_suites
        from megatron_retro.evaluation.rag_report import write_suite_report

        paths += write_suite_report(with_suites(exp, records), exp.out_dir)
    return paths


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
        _log(line)
    first = model_config(exp, exp.models[0])
    services = Services()
    try:
        return _run_phases(exp, first, services, progress, max_cells, t0)
    finally:
        services.stop()  # up from question retrieval to here: RETRO pretraining reads it too


def _run_phases(exp: ExperimentConfig, first: RunConfig, services: Services, progress: bool,
                max_cells: Optional[int], t0: float) -> dict:
    retrieval = prepare_retrieval(exp, first, progress, services)
    _log(f"retrieval: {json.dumps(retrieval['splits'])}")
    bases: Dict[str, str] = {}
    by_name = {m.name: m for m in exp.models}

    def base_of(model: ExperimentModel) -> str:
        """Pretrained (or reused) just before the model's first cell, after the base it starts from."""
        if model.name not in bases:
            if model.init_from:
                base_of(by_name[model.init_from])
            bases[model.name] = pretrain_base(exp, model, bases, progress, services)
        return bases[model.name]

    records, ran = [], 0
    for model, method, seed in grid(exp):
        done = os.path.join(cell_dir(exp, model.name, method, seed), "result.json")
        if os.path.isfile(done):
            with open(done, encoding="utf-8") as f:
                records.append(json.load(f))
            from megatron_retro.evaluation.experiment_suites import add_suite, missing_suite

            if missing_suite(exp, model, method, seed):  # finished before `suites` named it: from its adapter
                _log(f"cell {model.name} / {method} / seed {seed}: rag suite of the finished cell")
                add_suite(exp, model, method, seed, records[-1], progress)
            continue
        if max_cells is not None and ran >= max_cells:
            break
        _log(f"cell {model.name} / {method} / seed {seed}")
        records.append(run_cell(exp, model, base_of(model), method, seed, progress, services, retrieval["db_dir"]))
        ran += 1
        s = records[-1]["scores"]
        share = records[-1].get("top_share") or 0.0
        _log(f"  EM {100 * s['em']:.1f}  F1 {100 * s['f1']:.1f}  ROUGE-L {100 * s['rougeL']:.1f}  "
             f"({records[-1]['seconds']:.0f} s)"
             + (f"  degenerate: {100 * share:.0f}% of answers are {records[-1]['top_answer']!r}"
                if share >= exp.degenerate_share else ""))
    perplexity = []
    if exp.perplexity_pairs and exp.perplexity_seeds and not (max_cells is not None and ran >= max_cells):
        from megatron_retro.evaluation.perplexity_study import run_perplexity

        perplexity = run_perplexity(exp, _log)
    paths = []
    if _is_writer():
        paths = report(exp, records, perplexity)
    _barrier()
    return {"cells": len(records), "ran": ran, "total_cells": len(grid(exp)), "report": paths,
            "retrieval": retrieval, "seconds": round(time.perf_counter() - t0, 1)}
