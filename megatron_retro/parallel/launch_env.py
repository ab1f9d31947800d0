"""Who am I in the job? Rank, world size, local rank and rendezvous address from the launcher's env.

Understands torchrun (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT), Slurm
(SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID / SLURM_JOB_NODELIST), Open MPI
(OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK), MPICH/PMI (PMI_RANK / PMI_SIZE) and a plain single
process.  Pure functions of an environment mapping, so they are tested without launching anything.
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Mapping

from megatron_retro.errors import UserError

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" | "slurm" | "mpi" | "single"


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list: 'gpu[003-005,9],cpu1' -> 'gpu003'."""
    match = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise UserError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot parse a host name from it")
    prefix, ranges = match.group(1), match.group(2)
    if ranges is None:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise UserError(f"environment variable {name}={env[name]!r}: expected an integer") from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def detect_launch_env(env: Mapping[str, str]) -> LaunchEnv:
    """Read the launcher's variables; torchrun wins over Slurm (srun torchrun ...), then MPI."""
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
        addr = env.get("MASTER_ADDR", "127.0.0.1")
        port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT
        launcher = "torchrun"
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        addr = env.get("MASTER_ADDR") or first_host(nodelist)
        job = _int(env, "SLURM_JOB_ID") if "SLURM_JOB_ID" in env else 0
        port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else 20000 + job % 10000
        launcher = "slurm"
    elif "OMPI_COMM_WORLD_RANK" in env or "PMI_RANK" in env:
        ompi = "OMPI_COMM_WORLD_RANK" in env
        rank = _int(env, "OMPI_COMM_WORLD_RANK" if ompi else "PMI_RANK")
        world = _int(env, "OMPI_COMM_WORLD_SIZE" if ompi else "PMI_SIZE")
        local_name = "OMPI_COMM_WORLD_LOCAL_RANK" if ompi else "MPI_LOCALRANKID"
        local = _int(env, local_name) if local_name in env else 0
        addr = env.get("MASTER_ADDR", "127.0.0.1")
        port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT
        launcher = "mpi"
    else:
        return LaunchEnv(0, 1, 0, "127.0.0.1", _free_port(), "single")
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"{launcher} environment: rank {rank} is not in [0, world size {world})")
    return LaunchEnv(rank, world, local, addr, port, launcher)
