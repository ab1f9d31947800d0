"""The Slurm templates in launch/slurm/ on a real one-node Slurm cluster (slurm-wlm + munge,
installed here with apt-get when missing; skipped with the reason only where that is impossible).

- launch/slurm/pretrain.sbatch with 2 tasks (srun, gloo, DP=2) trains the tiny GPT: every step
  is in metrics.jsonl and the job ran as 2 Slurm tasks on one node.
- launch/slurm/grid.sbatch as a 2-element job array runs one grid line per element.
- launch/slurm/retrieval_pretrain.sbatch runs 2 retrieval shards (`megatron-retro serve` on a
  tiny hash-embedded index) as one job step, writes endpoints.json once both serve, runs the
  second step (here the quick `config` command instead of training) and stops the shards.
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


def test_retrieval_shards_job_step(cluster, ops_data_dir, tmp_path):
    import socket

    from ops_testlib import run_cli

    store, index = str(tmp_path / "store"), str(tmp_path / "index")
    run_cli(["index", "chunks", "--documents", f"{ops_data_dir}/documents.jsonl",
             "--tokenizer", f"{ops_data_dir}/tokenizer.model", "--out", store])
    run_cli(["index", "build", "--store", store, "--out", index, "--embedder", "hash:32", "--shards", "2"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    run_dir = tmp_path / "run"
    log = tmp_path / "job.out"
    env = dict(_env(cluster), SHARDS="2", REPLICAS="1", RETRIEVAL_NODES="0", RETRIEVAL_HOST="127.0.0.1",
               RETRIEVAL_BASE_PORT=str(base), RUN_DIR=str(run_dir), TRAIN_COMMAND="config", RETRIEVAL_ARGS="0",
               TRAINING_TASKS_PER_NODE="1", RETRIEVAL_TIMEOUT="240",
               MEGATRON_RETRO_RETRIEVAL_TOKEN="test-token-0123456789")
    job = cluster.run("sbatch", "--parsable", f"--chdir={REPO}", "--nodes=1", "--ntasks=2", f"--output={log}",
                      os.path.join(REPO, "launch", "slurm", "retrieval_pretrain.sbatch"), index, TINY_CONFIG,
                      "train.lr=0.00789", env=env).stdout.strip()
    state = cluster.wait(job, timeout=400)
    text = log.read_text() if log.exists() else "(no job output)"
    assert state == "COMPLETED", f"job {job} ended {state}:\n{text[-4000:]}"
    assert "2 shards x 1 replicas ready" in text and "lr: 0.00789" in text, text[-3000:]
    endpoints = json.loads((run_dir / "endpoints.json").read_text())["shards"]
    assert endpoints == [[f"127.0.0.1:{base}"], [f"127.0.0.1:{base + 1}"]] or \
        sorted(endpoints) == sorted([[f"127.0.0.1:{base}"], [f"127.0.0.1:{base + 1}"]])
    for s in range(2):  # each shard's ready file names the server that was serving
        info = json.loads((run_dir / f"ready-{s}-0.json").read_text())
        assert info["port"] in (base, base + 1)


def test_retrieval_sbatch_accepted(cluster, tmp_path):
    proc = cluster.run("sbatch", "--test-only", f"--chdir={REPO}", "--nodes=1",
                       os.path.join(REPO, "launch", "slurm", "retrieval_pretrain.sbatch"),
                       str(tmp_path / "index"), TINY_CONFIG, env=_env(cluster), check=False)
    assert proc.returncode == 0 and "to start at" in (proc.stdout + proc.stderr), proc.stdout + proc.stderr
