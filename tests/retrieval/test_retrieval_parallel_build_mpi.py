"""`megatron-retro index build` under a real `mpirun -np 2` (Open MPI + mpi4py): one shard per
rank, identical to the one-process build with 2 shards.  Installs openmpi-bin with apt-get when
mpirun is missing; skipped with the printed reason where that is impossible."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_retro.errors import UserError
from megatron_retro.retrieval.build import build_index
from megatron_retro.retrieval.parallel_build import launched_world_size, pick_backend
from retrieval_testlib import assert_same_index

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))
from slurm_cluster import apt_install  # noqa: E402


def test_backend_from_launcher_env():
    assert pick_backend("auto", {"RANK": "0", "WORLD_SIZE": "2"}) == "torch"
    assert pick_backend("auto", {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}) == "mpi"
    assert pick_backend("auto", {"PMI_SIZE": "4", "PMI_RANK": "0"}) == "mpi"
    assert pick_backend("mpi", {}) == "mpi"
    assert launched_world_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert launched_world_size({"WORLD_SIZE": "2", "OMPI_COMM_WORLD_SIZE": "2"}) == 2
    assert launched_world_size({}) == 1
    with pytest.raises(UserError, match="backend 'nccl'"):
        pick_backend("nccl", {})
    with pytest.raises(UserError, match="no launcher found"):
        pick_backend("auto", {})
    with pytest.raises(UserError, match="OMPI_COMM_WORLD_SIZE='x'"):
        launched_world_size({"OMPI_COMM_WORLD_SIZE": "x"})


@pytest.mark.distributed
def test_mpirun_build_equals_single_process_build(store, tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'megatron_retro[mpi]')")
    reason = apt_install(["openmpi-bin"], ["mpirun"])
    if reason is not None:
        print(f"SKIP test_mpirun_build: {reason}")
        pytest.skip(reason)
    single = tmp_path / "single"
    build_index(str(store.path), str(single), "hash:32", "ivf-flat", num_shards=2, nlist=8)
    par = tmp_path / "par"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # the build must find its ranks from MPI alone
        env.pop(name, None)
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2",
           sys.executable, "-m", "megatron_retro.cli", "index", "build", "--store", str(store.path),
           "--out", str(par), "--embedder", "hash:32", "--factory", "ivf-flat", "--nlist", "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, start_new_session=True)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.count("2 shards") == 1, proc.stdout  # rank 0 reports the 2-shard manifest
    assert_same_index(single, par, store)
