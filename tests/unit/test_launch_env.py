"""Rank / world / rendezvous detection for torchrun, Slurm, Open MPI, MPICH and single processes."""
import pytest

from megatron_retro.errors import UserError
from megatron_retro.parallel.launch_env import detect_launch_env, first_host


def test_torchrun():
    env = detect_launch_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1",
                             "MASTER_PORT": "1234"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.launcher) == \
        (3, 4, 1, "n1", 1234, "torchrun")


def test_slurm_takes_master_from_node_list_and_port_from_job():
    env = detect_launch_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                             "SLURM_JOB_NODELIST": "gpu[003-004,9]", "SLURM_JOB_ID": "123456"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.launcher) == (5, 8, 1, "gpu003", "slurm")
    assert env.master_port == 20000 + 123456 % 10000


def test_torchrun_inside_slurm_wins():
    env = detect_launch_env({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    assert env.launcher == "torchrun" and env.world_size == 2


def test_open_mpi_and_mpich():
    ompi = detect_launch_env({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4",
                              "OMPI_COMM_WORLD_LOCAL_RANK": "0", "MASTER_ADDR": "h"})
    assert (ompi.rank, ompi.world_size, ompi.launcher, ompi.master_addr) == (2, 4, "mpi", "h")
    mpich = detect_launch_env({"PMI_RANK": "1", "PMI_SIZE": "2"})
    assert (mpich.rank, mpich.world_size) == (1, 2)


def test_single_process_gets_a_free_loopback_port():
    env = detect_launch_env({})
    assert (env.rank, env.world_size, env.launcher, env.master_addr) == (0, 1, "single", "127.0.0.1")
    assert 0 < env.master_port < 65536


@pytest.mark.parametrize("nodelist,host", [("node7", "node7"), ("a[01-03]", "a01"), ("x[5],y2", "x5"),
                                           ("c-12", "c-12")])
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


def test_bad_values_are_named():
    with pytest.raises(UserError, match="RANK='zero': expected an integer"):
        detect_launch_env({"RANK": "zero", "WORLD_SIZE": "2"})
    with pytest.raises(UserError, match=r"rank 4 is not in \[0, world size 4\)"):
        detect_launch_env({"RANK": "4", "WORLD_SIZE": "4"})
