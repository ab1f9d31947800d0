"""The Slurm templates in launch/slurm/ on a real one-node Slurm cluster (slurm-wlm + munge,
installed here with apt-get when missing; skipped with the reason only where that is impossible).

- launch/slurm/pretrain.sbatch with 2 tasks (srun, gloo, DP=2) trains the tiny GPT: every step
  is in metrics.jsonl and the job ran as 2 Slurm tasks on one node.
- launch/slurm/grid.sbatch as a 2-element job array runs one grid line per element.
- launch/slurm/retrieval_pretrain.sbatch is accepted by the scheduler (sbatch --test-only).
"""
import json
import os
import sys

import pytest

from conftest import REPO, tiny_pretrain_args
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


def test_retrieval_sbatch_accepted(cluster, tmp_path):
    proc = cluster.run("sbatch", "--test-only", f"--chdir={REPO}", "--nodes=1",
                       os.path.join(REPO, "launch", "slurm", "retrieval_pretrain.sbatch"),
                       str(tmp_path / "index"), TINY_CONFIG, env=_env(cluster), check=False)
    assert proc.returncode == 0 and "to start at" in (proc.stdout + proc.stderr), proc.stdout + proc.stderr
