"""Start torch.distributed and megatron-core's parallel_state (TP, PP, virtual PP, DP) for a run.

NCCL with CUDA, gloo without; on a CPU-only torch the CUDA redirects of :mod:`cpu_compat` are
applied first.  Works under torchrun, Slurm, mpirun and as a single process (see launch_env).
"""
from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist

from megatron_retro.config import ParallelConfig
from megatron_retro.errors import UserError
from megatron_retro.parallel import cpu_compat
from megatron_retro.parallel.launch_env import LaunchEnv, detect_launch_env


@dataclass(frozen=True)
class ParallelContext:
    """This rank's coordinates in the (tp, pp, dp) grid."""

    launch: LaunchEnv
    backend: str
    device: torch.device
    tp: int
    pp: int
    dp: int
    vpp: Optional[int]
    tp_rank: int
    pp_rank: int
    dp_rank: int

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1

    @property
    def is_logging_rank(self) -> bool:
        """The rank that prints and writes metrics: last stage, first TP and DP rank."""
        return self.is_last_stage and self.tp_rank == 0 and self.dp_rank == 0


def choose_backend(requested: str) -> str:
    if requested == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if requested == "nccl" and not torch.cuda.is_available():
        raise UserError("parallel.backend=nccl: needs CUDA, which this machine does not have (use gloo or auto)")
    return requested


def seed_everything(seed: int) -> None:
    """Seed Python, numpy, torch and megatron's model-parallel RNG tracker (per-TP-rank streams)."""
    from megatron.core import tensor_parallel

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed, force_reset_rng=True)


def initialize_parallel(cfg: ParallelConfig, seed: int, env: Optional[Mapping[str, str]] = None,
                        timeout_minutes: int = 10) -> ParallelContext:
    """Initialise the process group (if needed) and megatron's parallel groups; return our place."""
    from megatron.core import parallel_state

    launch = detect_launch_env(os.environ if env is None else env)
    backend = choose_backend(cfg.backend)
    dp = cfg.check_world(launch.world_size)
    if torch.cuda.is_available():
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        cpu_compat.apply()
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    elif dist.get_world_size() != launch.world_size:
        raise UserError(f"process group has {dist.get_world_size()} ranks but the launcher "
                        f"says {launch.world_size}")
    if parallel_state.model_parallel_is_initialized():
        _destroy_megatron_groups()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=cfg.tp,
        pipeline_model_parallel_size=cfg.pp,
        virtual_pipeline_model_parallel_size=cfg.vpp,
        distributed_timeout_minutes=timeout_minutes,
    )
    seed_everything(seed)
    return ParallelContext(
        launch=launch, backend=backend, device=device, tp=cfg.tp, pp=cfg.pp, dp=dp, vpp=cfg.vpp,
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        pp_rank=parallel_state.get_pipeline_model_parallel_rank(),
        dp_rank=parallel_state.get_data_parallel_rank(),
    )


def _destroy_megatron_groups() -> None:
    """Forget megatron's groups *and* shut their process groups down.

    ``destroy_model_parallel`` only drops megatron's references; the groups stay registered with
    torch.distributed, each with its own gloo threads, so a process that re-initialises for
    several layouts (tests, experiment grids) would pile up thousands of threads.
    """
    from megatron.core import parallel_state
    from torch.distributed import distributed_c10d as c10d

    parallel_state.destroy_model_parallel()
    default = c10d._get_default_group()
    for group in list(c10d._world.pg_map):
        if group is not default:
            dist.destroy_process_group(group)


def destroy_parallel() -> None:
    """Tear down megatron's groups and the process group (end of a run or a test)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        _destroy_megatron_groups()
    if dist.is_initialized():
        dist.destroy_process_group()
