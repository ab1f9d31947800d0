"""Acceptance of the neighbour feed: RETRO pretraining at DP2 x TP2 (4 gloo processes, the real
`megatron-retro pretrain` under torchrun) against a real 2-shard x 2-replica retrieval service.

(a) the shards receive exactly one query per distinct chunk the job consumes (train steps and
    the held-out batch): no TP rank and no DP rank asks for a chunk another rank asked for;
(b) the losses equal those of the same run with the in-process index (same shard files);
(c) one replica of shard 0 is SIGKILLed after the first step: the run finishes, same losses;
(d) `index precompute` + retrieval.mode=precomputed gives the in-process run's losses bit for bit
    and the service run's within 1e-6 (a service of
    another build is refused before any step: tests/retrieval/test_retrieval_build_id.py).
Under pipeline parallelism (PP2 x DP2, the neighbours travel to the second stage in the model-parallel
broadcast): one source per model-parallel group, exactly one query per distinct chunk, the losses of
a single-process in-process-index run; `index precompute` on 2 ranks (a slice each, through the
service) writes the same table as on one rank.
One launch per configuration, tiny sizes.
"""
import json
import os
import subprocess
import sys
import time

import grpc
import pytest

from conftest import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
STEPS, GBS, MBS, DP, L = 6, 4, 1, 2, 2  # L = seq_length / chunk_length chunks per sample

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


CONFIG = os.path.join(ROOT, "configs", "models", "retro-tiny.yaml")


def _args(data_dir, out, *extra):
    return ["--config", CONFIG, "--no-progress", *_overrides(data_dir, out, *extra)]


def _overrides(data_dir, out, *extra):
    return [f"data.dir={data_dir}", "data.num_entities=60", "data.vocab_size=512", "data.seed=3",
            "data.split=90,10,0", "model.seq_length=128", "model.hidden_size=64", "model.ffn_hidden_size=128",
            "retro.embedder=hash:64", "parallel.tp=2", f"train.micro_batch_size={MBS}",
            f"train.global_batch_size={GBS}", f"train.steps={STEPS}", "train.eval_iters=1",
            "train.eval_interval=0", "train.lr_warmup_steps=1", "checkpoint.save_interval=0",
            f"out_dir={out}", *extra]


def _launch(command, args, nproc=4):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "megatron_retro.cli", command, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-6000:]}"
    return json.loads(out.strip().splitlines()[-1])


def _rows(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def _losses(out):
    return [r["loss"] for r in _rows(out)] + [_rows(out)[-1]["valid_loss"]]


def _served(endpoint):
    from megatron_retro.retrieval.service import retrieval_pb2 as pb
    from megatron_retro.retrieval.service import retrieval_pb2_grpc as pb_grpc

    with grpc.insecure_channel(endpoint) as channel:
        return pb_grpc.RetrievalStub(channel).Info(pb.InfoRequest(), timeout=10).queries_served


@pytest.fixture(scope="module")
def two_shard_db(small_data_dir, tmp_path_factory):
    """The run's retrieval database (built as training builds it) and a 2-shard index of its store;
    the number of distinct chunks the run consumes."""
    from megatron_retro.config import load_config
    from megatron_retro.retrieval.build import build_index
    from megatron_retro.training.batches import eval_sample_indices, step_sample_indices
    from megatron_retro.training.data_setup import prepare_gpt_datasets
    from megatron_retro.training.retro_data import ensure_retro_db, retrieval_dir

    cfg = load_config(CONFIG, _overrides(small_data_dir, "unused"))
    data, tokenizer, train_ds, valid_ds = prepare_gpt_datasets(cfg, DP)
    db = retrieval_dir(cfg, os.path.dirname(os.path.abspath(data.prefix)))
    ensure_retro_db(cfg, data.prefix, tokenizer, train_ds.indices, db)
    index2 = str(tmp_path_factory.mktemp("index") / "two-shards")
    build_index(os.path.join(db, "store"), index2, "hash:64", "flat", num_shards=2)
    train = {i for s in range(STEPS) for r in range(DP)
             for idx in step_sample_indices(len(train_ds), s, GBS, MBS, DP, r) for i in idx}
    valid = {i for r in range(DP) for idx in eval_sample_indices(len(valid_ds), 1, MBS, DP, r) for i in idx}
    return index2, (len(train) + len(valid)) * L


def test_service_feeds_each_chunk_once_and_survives_a_killed_replica(small_data_dir, two_shard_db, tmp_path):
    from megatron_retro.retrieval.service.launcher import start_service

    index2, distinct_chunks = two_shard_db
    local = tmp_path / "local"
    ref = _finish(_launch("pretrain", _args(small_data_dir, local, f"retrieval.index_dir={index2}")))
    svc = start_service(index2, 2, replicas=2, log_dir=str(tmp_path), extra_args=["--log-interval", "1"])
    try:
        endpoints = tmp_path / "endpoints.json"
        svc.write(str(endpoints))
        remote = tmp_path / "service"
        proc = _launch("pretrain", _args(small_data_dir, remote, "retrieval.mode=service",
                                         f"retrieval.endpoints={endpoints}", f"retrieval.index_dir={index2}"))
        metrics = remote / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().strip()) and proc.poll() is None:
            time.sleep(0.05)
        svc.kill(0, 0)  # DP rank 0's preferred replica of shard 0
        steps_at_kill = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
        summary = _finish(proc)
        # (a) every shard sees every query row once: shard 1 (both replicas alive) counts them all
        served = sum(_served(e) for e in svc.endpoints[1])
    finally:
        svc.stop()
    assert steps_at_kill < STEPS, "the replica must die while the run still needs neighbours"
    assert served == distinct_chunks
    rows = _rows(remote)
    assert sum(r["retrieval_queries"] for r in rows) == served - DP * MBS * L  # all but the held-out batch
    assert 0 <= summary["retrieval_wait_share"] < 1 and all(r["retrieval_wait_s"] >= 0 for r in rows)
    # (b), (c): the same losses as the in-process index, though a replica died mid-run
    assert _losses(remote) == pytest.approx(_losses(local), rel=1e-6)
    assert ref["final_step"] == summary["final_step"] == STEPS
    log = (tmp_path / "shard-1-replica-0.log").read_text()
    assert "queries, latency mean" in log  # the per-interval traffic line

    # (d) precomputed neighbours: computed once, then bit-identical losses
    pre = tmp_path / "pre"
    run_cli(["index", "precompute", "--config", CONFIG, "--dp", str(DP),
             *_overrides(small_data_dir, pre, f"retrieval.index_dir={index2}", f"retrieval.precomputed={pre}-nb")])
    _finish(_launch("pretrain", _args(small_data_dir, pre, "retrieval.mode=precomputed",
                                      f"retrieval.precomputed={pre}-nb")))
    assert _losses(pre) == _losses(local)
    assert _losses(pre) == pytest.approx(_losses(remote), rel=1e-6)   # precomputed vs service


def test_pipeline_parallel_feed_and_multi_rank_precompute(small_data_dir, two_shard_db, tmp_path):
    import numpy as np

    from megatron_retro.retrieval.service.launcher import start_service

    index2, distinct_chunks = two_shard_db
    # megatron's initialisation depends on the pipeline layout: both runs start from one checkpoint
    init = tmp_path / "init"
    _finish(_launch("pretrain", _args(small_data_dir, init, f"retrieval.index_dir={index2}", "parallel.tp=1",
                                      "train.steps=1"), nproc=1))
    start = f"checkpoint.load={next(init.rglob('iter_0000001'))}"
    single = tmp_path / "single"  # eval_iters x DP: the same held-out samples as the DP2 run's
    _finish(_launch("pretrain", _args(small_data_dir, single, f"retrieval.index_dir={index2}", "parallel.tp=1",
                                      start, f"train.eval_iters={DP}"), nproc=1))
    svc = start_service(index2, 2, replicas=1, log_dir=str(tmp_path))
    try:
        endpoints = tmp_path / "endpoints.json"
        svc.write(str(endpoints))
        service = [f"retrieval.endpoints={endpoints}", f"retrieval.index_dir={index2}"]
        pp = tmp_path / "pp2"
        summary = _finish(_launch("pretrain", _args(small_data_dir, pp, "parallel.tp=1", "parallel.pp=2", start,
                                                    "retrieval.mode=service", *service)))
        served = [_served(e) for reps in svc.endpoints for e in reps]
        parts = tmp_path / "parts"
        # multi-rank precompute through the service: rank r computes steps r, r + 2, ...
        _finish(_launch("index", ["precompute", "--config", CONFIG, "--dp", str(DP),
                                  *_overrides(small_data_dir, tmp_path / "unused", "retrieval.mode=service", *service,
                                              f"retrieval.precomputed={parts}")], nproc=2))
    finally:
        svc.stop()
    rows = _rows(pp)
    assert summary["final_step"] == STEPS
    assert [r["retrieval_sources"] for r in rows] == [DP] * STEPS  # 4 ranks, 2 model-parallel groups
    assert served == [distinct_chunks, distinct_chunks]           # every chunk once, on each shard
    assert sum(r["retrieval_queries"] for r in rows) == distinct_chunks - DP * MBS * L
    assert _losses(pp) == pytest.approx(_losses(single), rel=1e-6)

    whole = tmp_path / "whole"
    run_cli(["index", "precompute", "--config", CONFIG, "--dp", str(DP),
             *_overrides(small_data_dir, tmp_path / "unused", f"retrieval.index_dir={index2}",
                         f"retrieval.precomputed={whole}")])
    for name in ("keys.npy", "neighbours.npy"):
        assert np.array_equal(np.load(parts / name), np.load(whole / name)), name
    assert json.loads((parts / "meta.json").read_text())["num_chunks"] == distinct_chunks
