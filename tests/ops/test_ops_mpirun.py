"""launch/mpirun_pretrain.sh under a real Open MPI (2 ranks, gloo, DP=2): ranks come from
OMPI_COMM_WORLD_*, the tiny GPT trains and its losses equal a single-process run of the same
global batch (per-token loss normalisation makes every DP split give the same step).
Installs openmpi-bin with apt-get when missing; skipped with the reason where that is impossible."""
import json
import os
import socket
import subprocess
import sys

import pytest

from ops_testlib import REPO, run_cli, tiny_pretrain_args
from slurm_cluster import apt_install

pytestmark = pytest.mark.slow

TINY_CONFIG = os.path.join(REPO, "configs", "models", "gpt-tiny.yaml")


def _run(cmd, env):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
                          start_new_session=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [(r["step"], r["loss"]) for r in map(json.loads, filter(str.strip, f))]


def test_mpirun_launcher_matches_single_process(ops_data_dir, tmp_path):
    reason = apt_install(["openmpi-bin"], ["mpirun"])
    if reason is not None:
        print(f"SKIP test_mpirun: {reason}")
        pytest.skip(reason)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               MASTER_ADDR="127.0.0.1", MPIRUN_ARGS="--allow-run-as-root --oversubscribe --bind-to none",
               OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    args = tiny_pretrain_args(ops_data_dir, steps=2)
    mpi_out = str(tmp_path / "mpi")
    proc = _run(["bash", os.path.join(REPO, "launch", "mpirun_pretrain.sh"), "2", TINY_CONFIG, "--out", mpi_out,
                 *args], dict(env, MASTER_PORT=str(_free_port())))
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, proc.stdout  # one logging rank out of two
    single_out = str(tmp_path / "single")
    run_cli(["pretrain", "--config", TINY_CONFIG, "--no-progress", "--out", single_out, *args])
    mpi, single = _losses(mpi_out), _losses(single_out)
    assert [s for s, _ in mpi] == [s for s, _ in single] == [1, 2]
    assert [loss for _, loss in mpi] == pytest.approx([loss for _, loss in single], rel=1e-5)
