"""RETRO pretraining fed by retrieval: in-process index vs the sharded service vs precomputed.

Real runs of `megatron-retro pretrain` (retro-tiny on the bundled corpus, MiniLM query embedding,
2 data-parallel ranks under torchrun, gloo): the same steps, batch and seed with

* ``local``        the in-process index (2 shards loaded in each feeding rank),
* ``service``      a 2-shard retrieval service started here, prefetch depth 2 and 3,
* ``precomputed``  neighbours written once by `megatron-retro index precompute`.

For each run it prints one JSON line: tokens/s (median over the steps after the first) and the
share of step time the feeding ranks waited on neighbours after the first step (metrics.jsonl
``retrieval_wait_s`` / (DP x ``step_time_s``)).

    python benchmarks/bench_feed.py --data-dir /tmp/bench-feed-data --steps 20

BENCHMARKS.md (## Retrieval feed) holds the figures and the load they were taken at.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "models", "retro-tiny.yaml")
DP = 2


def overrides(args, out: str, *extra: str) -> list[str]:
    return [f"data.dir={args.data_dir}", f"data.num_entities={args.entities}", f"train.steps={args.steps}",
            f"train.micro_batch_size={args.micro_batch}", "train.eval_iters=1", "train.eval_interval=0",
            "checkpoint.save_interval=0", f"train.lr_warmup_steps=2", f"out_dir={out}", *extra]


def cli(*argv: str, nproc: int = 0) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] \
        if nproc else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    subprocess.run([*launcher, "-m", "megatron_retro.cli", *argv], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def summarise(name: str, out: str) -> dict:
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))][1:]  # after the first step
    step_time = sum(r["step_time_s"] for r in rows)
    return {"run": name, "steps": len(rows), "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rows), 1),
            "wait_share": round(sum(r["retrieval_wait_s"] for r in rows) / (DP * step_time), 4),
            "queries_per_step": statistics.median(r["retrieval_queries"] for r in rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="bundled data directory (generated on first use)")
    p.add_argument("--entities", type=int, default=300)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--work", help="run directory (default: a temporary one)")
    args = p.parse_args()

    from megatron_retro.retrieval.build import build_index
    from megatron_retro.retrieval.service.launcher import start_service

    work = args.work or tempfile.mkdtemp(prefix="bench-feed-")
    # 1. the database, built by a first (unmeasured) run, then a 2-shard index of its store
    cli("pretrain", "--config", CONFIG, "--no-progress", *overrides(args, f"{work}/warmup", "train.steps=1"))
    db = next(os.path.join(args.data_dir, d) for d in os.listdir(args.data_dir) if d.startswith("retro_db-"))
    index2 = os.path.join(work, "index-2-shards")
    if not os.path.isdir(index2):
        build_index(os.path.join(db, "store"), index2, "minilm", "flat", num_shards=2,
                    embeddings=os.path.join(db, "index", "embeddings.npy"))
    pin = f"retrieval.index_dir={index2}"
    results = []
    # 2. in-process index
    cli("pretrain", "--config", CONFIG, "--no-progress", *overrides(args, f"{work}/local", pin), nproc=DP)
    results.append(summarise("local", f"{work}/local"))
    # 3. the service, prefetch depth 2 and 3
    svc = start_service(index2, 2, replicas=1, log_dir=work)
    try:
        endpoints = os.path.join(work, "endpoints.json")
        svc.write(endpoints)
        for depth in (2, 3):
            out = f"{work}/service-depth{depth}"
            cli("pretrain", "--config", CONFIG, "--no-progress",
                *overrides(args, out, pin, "retrieval.mode=service", f"retrieval.endpoints={endpoints}",
                           f"retrieval.prefetch_depth={depth}"), nproc=DP)
            results.append(summarise(f"service depth {depth}", out))
    finally:
        svc.stop()
    # 4. precomputed neighbours
    nb = os.path.join(work, "precomputed")
    cli("index", "precompute", "--config", CONFIG, "--dp", str(DP),
        *overrides(args, f"{work}/pre", pin, f"retrieval.precomputed={nb}"))
    cli("pretrain", "--config", CONFIG, "--no-progress",
        *overrides(args, f"{work}/pre", "retrieval.mode=precomputed", f"retrieval.precomputed={nb}"), nproc=DP)
    results.append(summarise("precomputed", f"{work}/pre"))
    for r in results:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
