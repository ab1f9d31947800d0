"""Phase 1 of an experiment: the task corpus's retrieval database, the sharded retrieval
service(s) on it (``Services``, up from question retrieval to the end of the run) and the top-k
passages of every question, retrieved once and cached so that every cell reads the same set —
once per tokenizer of the grid's models (``prepare_model_retrieval``: a model with its own, e.g.
Gemma's, reads a database and question caches tokenized with it).

Collective under torchrun (every rank runs it; rank 0 starts the servers and writes).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Dict, List, Optional

from megatron_retro.config import RunConfig
from megatron_retro.evaluation.experiment_config import ExperimentConfig
from megatron_retro.evaluation.grid_runs import barrier, is_writer, log, model_config


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


def retro_dbs(exp: ExperimentConfig) -> List[str]:
    """Retrieval databases of the RETRO models pretrained here (those that name theirs)."""
    out = []
    for model in exp.models:
        if model.checkpoint:
            continue
        cfg = model_config(exp, model)
        if cfg.model.arch == "retro" and cfg.retro.retrieval_dir:
            out.append(cfg.retro.retrieval_dir)
    return out


def start_services(exp: ExperimentConfig, qa_db: str, services: Services) -> None:
    """Collective (parallel state up): rank 0 starts a service per database; all ranks learn the endpoints."""
    import secrets

    from megatron_retro.retrieval.sharding import load_manifest

    root = _mkdir(os.path.join(exp.out_dir, "retrieval"))
    dbs = [qa_db] + [d for d in retro_dbs(exp)  # a database not built yet is searched in-process
                     if os.path.isfile(os.path.join(d, "index", "manifest.json"))]
    if not services.token_file:  # first call; a later model's database (another tokenizer) keeps the token
        services.token_file = os.path.join(root, "token")
        if is_writer():
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
        if os.path.join(root, f"endpoints{name}.json") in services.endpoints.values():  # same name, other tokenizer
            name += f"-{len(services.endpoints)}"
        endpoints = os.path.join(root, f"endpoints{name}.json")
        services.endpoints[key] = endpoints
        if is_writer():
            from megatron_retro.retrieval.service.launcher import start_service

            index_dir = os.path.join(db, "index")
            shards = load_manifest(index_dir)["num_shards"]
            service = start_service(index_dir, shards, replicas=exp.retrieval_replicas,
                                    token=os.environ["MEGATRON_RETRO_RETRIEVAL_TOKEN"],
                                    log_dir=_mkdir(os.path.join(root, "logs" + name)) if name else root)
            services.running.append(service)
            service.write(endpoints)
            log(f"retrieval service on {db}: {shards} shard(s) x {exp.retrieval_replicas} replica(s) on loopback")
    barrier()  # the endpoints files exist for every rank


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
            start_services(exp, qa.db_dir, services)
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
        dp = dp_size(cfg)
        n = sum(s["examples"] for s in splits.values())
        log(f"question retrieval ({cfg.retrieval.mode}): {n} questions over {dp} DP rank(s), "
             f"~{n // dp} per rank (cached splits are not searched again), {info['retrieval_seconds']} s")
    finally:
        if own:
            services.stop()
        destroy_parallel()
    return info


def prepare_model_retrieval(exp: ExperimentConfig, progress: bool, services: Services) -> Dict[str, dict]:
    """Collective: ``prepare_retrieval`` once per distinct QA database of the grid's models (one per
    tokenizer: ``qa_data_key``); returns model name -> its database's info (db_dir, splits)."""
    out: Dict[str, dict] = {}
    by_key: Dict[str, dict] = {}
    for model in exp.models:
        cfg = model_config(exp, model)
        key = qa_data_key(cfg)
        if key not in by_key:
            by_key[key] = prepare_retrieval(exp, cfg, progress, services)
            log(f"retrieval for {model.name} (tokenizer {cfg.data.tokenizer or 'bundled'}, "
                f"{by_key[key]['db_dir']}): {json.dumps(by_key[key]['splits'])}")
        out[model.name] = by_key[key]
    return out


def qa_data_key(cfg: RunConfig) -> str:
    """What decides a model's QA data and retrieval database: its data section (the tokenizer: the
    corpus, passages and questions are tokenized with the model's own) and the task's retrieval
    settings.  Models with equal keys share one database and its question caches."""
    qa = cfg.qa
    return repr((cfg.data, qa.task, qa.path, qa.passages, qa.retrieval_dir, qa.chunk_length, qa.passage_length,
                 qa.embedder, qa.num_passages))


def dp_size(cfg: RunConfig) -> int:
    """Data-parallel ranks of a run of this job (torchrun's WORLD_SIZE / model-parallel size)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")) // (cfg.parallel.tp * cfg.parallel.pp))


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
