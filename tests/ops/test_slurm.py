"""The Slurm templates in launch/slurm/ on a real one-node Slurm cluster (slurm-wlm + munge,
installed here with apt-get when missing; skipped with the reason only where that is impossible).

- launch/slurm/pretrain.sbatch with 2 tasks (srun, gloo, DP=2) trains the tiny GPT: every step
  is in metrics.jsonl and the job ran as 2 Slurm tasks on one node.
- launch/slurm/grid.sbatch as a 2-element job array runs one grid line per element.
- launch/slurm/retrieval_pretrain.sbatch runs 2 retrieval shards (`megatron-retro serve` over the
  tiny RETRO run's own hash-embedded database) as one job step, writes endpoints.json once both
  serve, runs RETRO pretraining (2 tasks) against them as the second step and stops the shards;
  the shard logs count exactly the chunks the training consumed.
"""
import json
import os
import sys

import pytest

from ops_testlib import REPO, tiny_pretrain_args
from slurm_cluster import SlurmCluster, ensure_installed

pytestmark = pytest.mark.slow

TINY_CONFIG = os.path.join(REPO, "configs", "models", "gpt-tiny.yaml")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = ensure_installed()
    if reason is not None:
        print(f"SKIP test_slurm: {reason}")
        pytest.skip(reason)
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"), cpus=max(2, os.cpu_count() or 1))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _env(cluster):
    # The job inherits the submitter's environment (sbatch --export=ALL): this interpreter, loopback.
    return dict(cluster.env, PYTHON=sys.executable, MASTER_ADDR="127.0.0.1", PYTHONWARNINGS="ignore",
                TRITON_INTERPRET="1")


def _submit(cluster, *args):
    out = cluster.run("sbatch", "--parsable", f"--chdir={REPO}", *args, env=_env(cluster)).stdout.strip()
    return out.split(";")[0]


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_pretrain_sbatch_two_tasks(cluster, ops_data_dir, tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "job.out"
    job = _submit(cluster, "--ntasks=2", "--ntasks-per-node=2", "--nodes=1", f"--output={log}",
                  os.path.join(REPO, "launch", "slurm", "pretrain.sbatch"), TINY_CONFIG,
                  "--out", str(out), *tiny_pretrain_args(ops_data_dir, steps=3))
    state = cluster.wait(job, timeout=300)
    text = log.read_text() if log.exists() else "(no job output)"
    assert state == "COMPLETED", f"job {job} ended {state}:\n{text[-4000:]}"
    assert "2 tasks" in text, text[-2000:]
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["loss"] > 0 and r["loss"] == r["loss"] for r in rows)
    summary = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(summary) == 1, "exactly one rank (the logging rank) prints the summary"
    assert summary[0]["final_step"] == 3
    info = cluster.run("scontrol", "-o", "show", "job", job).stdout
    assert "NumTasks=2" in info or "NumCPUs=2" in info, info


def test_grid_job_array(cluster, tmp_path):
    """Each array element runs its own grid line (a `config` command: no training, so it is quick)."""
    grid = tmp_path / "grid.txt"
    grid.write_text("# a two-line experiment grid\n"
                    f"config --config {TINY_CONFIG} train.lr=0.00123\n"
                    "\n"
                    f"config --config {TINY_CONFIG} train.lr=0.00456\n")
    env = dict(_env(cluster), OUT_ROOT=str(tmp_path / "grid"))
    job = cluster.run("sbatch", "--parsable", f"--chdir={REPO}", "--array=0-2", "--ntasks=1",
                      "--ntasks-per-node=1", "--nodes=1", f"--output={tmp_path}/grid-%a.out",
                      os.path.join(REPO, "launch", "slurm", "grid.sbatch"), str(grid), env=env).stdout.strip()
    state = cluster.wait(job, timeout=180)
    logs = [(tmp_path / f"grid-{i}.out").read_text() for i in range(3)]
    assert sorted(state.split()) == ["COMPLETED", "COMPLETED", "FAILED"], f"{state}\n{logs}"
    for i, lr in enumerate(("0.00123", "0.00456")):
        text = logs[i]
        assert f"lr: {lr}" in text, text
        assert f"out_dir: {tmp_path}/grid/{i}" in text, text
    assert "has no line 2" in logs[2]


RETRO_CONFIG = os.path.join(REPO, "configs", "models", "retro-tiny.yaml")


def _retro_overrides(data_dir, steps, micro, global_batch):
    return ["--no-progress", "model.seq_length=128", "model.hidden_size=64", "model.ffn_hidden_size=128", "retro.embedder=hash:64",
            f"train.steps={steps}", f"train.micro_batch_size={micro}", f"train.global_batch_size={global_batch}",
            "train.lr_warmup_steps=1", "train.eval_interval=0", "train.eval_iters=1", "checkpoint.save_interval=0",
            f"data.dir={data_dir}", "data.num_entities=60", "data.vocab_size=512", "data.seed=3",
            "data.split=90,10,0"]


def test_retrieval_shards_job_step(cluster, ops_data_dir, tmp_path):
    """Step 1: 2 shard servers over the run's own retrieval database; step 2: RETRO pretraining
    (2 tasks, DP=2) fed by them; the shards' logs count exactly the chunks the job consumed."""
    import re
    import socket

    from megatron_retro.config import load_config
    from megatron_retro.retrieval.build import build_index
    from megatron_retro.training.data_setup import prepare_gpt_datasets
    from megatron_retro.training.retro_data import ensure_retro_db, retrieval_dir

    steps, micro, global_batch, dp, chunks_per_sample = 2, 1, 2, 2, 2
    overrides = _retro_overrides(ops_data_dir, steps, micro, global_batch)
    cfg = load_config(RETRO_CONFIG, [o for o in overrides if "=" in o])
    data, tokenizer, train_ds, _ = prepare_gpt_datasets(cfg, dp)
    db = retrieval_dir(cfg, os.path.dirname(os.path.abspath(data.prefix)))
    ensure_retro_db(cfg, data.prefix, tokenizer, train_ds.indices, db)  # the run's database, as training builds it
    index = str(tmp_path / "index")
    build_index(os.path.join(db, "store"), index, "hash:64", "flat", num_shards=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    run_dir = tmp_path / "run"
    out = tmp_path / "train"
    log = tmp_path / "job.out"
    env = dict(_env(cluster), SHARDS="2", REPLICAS="1", RETRIEVAL_NODES="0", RETRIEVAL_HOST="127.0.0.1",
               RETRIEVAL_BASE_PORT=str(base), RUN_DIR=str(run_dir), TRAINING_TASKS_PER_NODE=str(dp),
               RETRIEVAL_TIMEOUT="240", SERVE_ARGS="--log-interval 1",
               MEGATRON_RETRO_RETRIEVAL_TOKEN="test-token-0123456789")
    job = cluster.run("sbatch", "--parsable", f"--chdir={REPO}", "--nodes=1", "--ntasks=2", f"--output={log}",
                      os.path.join(REPO, "launch", "slurm", "retrieval_pretrain.sbatch"), index, RETRO_CONFIG,
                      *overrides, f"retrieval.index_dir={index}", f"out_dir={out}", env=env).stdout.strip()
    state = cluster.wait(job, timeout=600)
    text = log.read_text() if log.exists() else "(no job output)"
    assert state == "COMPLETED", f"job {job} ended {state}:\n{text[-4000:]}"
    assert "2 shards x 1 replicas ready" in text, text[-3000:]
    endpoints = json.loads((run_dir / "endpoints.json").read_text())["shards"]
    assert sorted(endpoints) == [[f"127.0.0.1:{base}"], [f"127.0.0.1:{base + 1}"]]
    for s in range(2):  # each shard's ready file names the server that was serving
        info = json.loads((run_dir / f"ready-{s}-0.json").read_text())
        assert info["port"] in (base, base + 1)
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, steps + 1)) and all(r["loss"] == r["loss"] for r in rows)
    assert [r["retrieval_sources"] for r in rows] == [dp] * steps  # one client per DP rank
    consumed = sum(r["retrieval_queries"] for r in rows) + dp * micro * chunks_per_sample  # + the held-out batch
    assert consumed == (steps * global_batch + dp * micro) * chunks_per_sample
    # the shard logs: per-second traffic lines while training ran; each shard's running total (and
    # its total when stopped) reaches exactly the chunks the job consumed
    for shard in range(2):
        assert re.search(rf"shard {shard}/2: last 1s: \d+ requests, \d+ queries, latency mean", text), text[-3000:]
        totals = re.findall(rf"shard {shard}/2: last 1s: .*\(total (\d+) queries\)", text) + \
            re.findall(rf"shard {shard}/2: signal \d+, draining for [\d.]+s \((\d+) queries served\)", text)
        assert max(map(int, totals)) == consumed, (totals, text[-3000:])


def test_retrieval_sbatch_accepted(cluster, tmp_path):
    proc = cluster.run("sbatch", "--test-only", f"--chdir={REPO}", "--nodes=1",
                       os.path.join(REPO, "launch", "slurm", "retrieval_pretrain.sbatch"),
                       str(tmp_path / "index"), TINY_CONFIG, env=_env(cluster), check=False)
    assert proc.returncode == 0 and "to start at" in (proc.stdout + proc.stderr), proc.stdout + proc.stderr
