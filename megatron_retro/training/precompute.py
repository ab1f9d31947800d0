"""`megatron-retro index precompute --config RUN.yaml`: every chunk a RETRO run will train on (and
its held-out chunks), with its neighbours, written once for ``retrieval.mode=precomputed``.

The run's samples are planned exactly as training plans them (``batches.step_sample_indices`` for
every step and DP rank, ``eval_sample_indices`` for the held-out set); each chunk is asked as its
own query with its document, the same query the training feed sends, through the source the
run config names (``retrieval.mode`` local or service).  The output directory (default
``<retrieval db>/precomputed``) records the build identity it was computed from; a run in
precomputed mode checks it against its own chunk store and embedder first.

Under torchrun / mpirun each rank computes the steps ``rank, rank + world, ...`` into a part
directory and rank 0 merges the parts (one table, keys sorted).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np

from megatron_retro.config import RunConfig
from megatron_retro.errors import UserError


def _plans(cfg: RunConfig, n_train: int, n_valid: int, dp: int, rank: int, world: int):
    """(dataset name, flat sample indices) per step of this rank's slice, then the held-out set."""
    from megatron_retro.training.batches import eval_sample_indices, step_sample_indices

    train = cfg.train
    gbs = train.global_batch_size or train.micro_batch_size * dp
    for step in range(rank, train.steps, world):
        yield "train", [i for r in range(dp) for idx in step_sample_indices(n_train, step, gbs, train.micro_batch_size,
                                                                             dp, r) for i in idx]
    if rank == 0:
        yield "valid", [i for r in range(dp) for idx in eval_sample_indices(n_valid, train.eval_iters,
                                                                             train.micro_batch_size, dp, r) for i in idx]


def precompute_run(cfg: RunConfig, dp: int = 1, out: str | None = None, progress: bool = True) -> dict:
    """Precompute the neighbours of run ``cfg`` (trained with ``dp`` data-parallel ranks)."""
    from megatron_retro.parallel.launch_env import detect_launch_env
    from megatron_retro.retrieval.prefetch import precompute_neighbours
    from megatron_retro.training.data_setup import prepare_gpt_datasets
    from megatron_retro.training.neighbour_feed import _flat_queries
    from megatron_retro.training.retro_data import RetroSamples, ensure_retro_db, open_source, retrieval_dir

    if cfg.model.arch != "retro":
        raise UserError(f"model.arch={cfg.model.arch}: index precompute is for RETRO runs (model.arch=retro)")
    if cfg.retrieval.mode == "precomputed":
        cfg = dataclasses.replace(cfg, retrieval=dataclasses.replace(cfg.retrieval, mode="local"))
    env = detect_launch_env(os.environ)
    rank, world = env.rank, env.world_size
    data, tokenizer, train_ds, valid_ds = prepare_gpt_datasets(cfg, dp)
    db = retrieval_dir(cfg, os.path.dirname(os.path.abspath(data.prefix)))
    if rank == 0:
        ensure_retro_db(cfg, data.prefix, tokenizer, train_ds.indices, db)
    else:  # rank 0 builds the database (renamed into place whole)
        _wait_for(lambda: os.path.isdir(os.path.join(db, "index")), f"{db}/index")
    out = out or cfg.retrieval.precomputed or os.path.join(db, "precomputed")
    m = cfg.retro.chunk_length
    sets = {"train": RetroSamples(train_ds, m, tokenizer.eod), "valid": RetroSamples(valid_ds, m, tokenizer.eod)}
    source = open_source(cfg, db, tokenizer, rank=rank)

    def items():
        for name, flat in _plans(cfg, len(train_ds), len(valid_ds), dp, rank, world):
            chunks, docs = sets[name].queries(flat)
            yield {"chunks": chunks, "docs": docs}

    target = out if world == 1 else os.path.join(out + ".parts", f"part-{rank:05d}")
    try:
        meta = precompute_neighbours(items(), source, _flat_queries, target, depth=cfg.retrieval.prefetch_depth,
                                     progress=progress and rank == 0)
    finally:
        source.close()
    if world > 1 and rank == 0:  # parts are renamed into place whole
        parts = [os.path.join(out + ".parts", f"part-{r:05d}", "meta.json") for r in range(world)]
        _wait_for(lambda: all(os.path.isfile(p) for p in parts), f"{out}.parts")
        meta = _merge_parts(out, world)
    return meta


def _wait_for(ready, what: str, timeout: float = 24 * 3600.0) -> None:
    """Poll ``ready()`` (a file-system barrier: the ranks share no process group here)."""
    import time

    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise UserError(f"{what}: not ready within {timeout:.0f}s (did another rank fail?)")
        time.sleep(0.2)


def _merge_parts(out: str, world: int) -> dict:
    """One precomputed directory from the ranks' parts (keys sorted, a repeated chunk kept once)."""
    from megatron_retro.retrieval.prefetch import write_precomputed

    parts = [os.path.join(out + ".parts", f"part-{r:05d}") for r in range(world)]
    metas = [json.loads(open(os.path.join(p, "meta.json")).read()) for p in parts]
    keys = np.concatenate([np.load(os.path.join(p, "keys.npy")) for p in parts])
    table = np.concatenate([np.load(os.path.join(p, "neighbours.npy")) for p in parts])
    meta = {**metas[0], "batches": sum(m["batches"] for m in metas),
            "retrieval_wait_s": sum(m["retrieval_wait_s"] for m in metas)}
    meta = write_precomputed(out, keys, table, meta)
    shutil.rmtree(out + ".parts")
    return meta
