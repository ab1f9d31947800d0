"""Re-initialising the parallel layout in one process (tests, experiment grids) must not leak
process groups: every megatron group owns gloo threads, which used to pile up by the thousand."""
import os

from megatron_retro.config import ParallelConfig
from megatron_retro.parallel.initialize import destroy_parallel, initialize_parallel


def _threads() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def test_reinitialising_does_not_accumulate_groups_or_threads():
    from torch.distributed import distributed_c10d as c10d

    initialize_parallel(ParallelConfig(), seed=1)
    groups, threads = len(c10d._world.pg_map), _threads()
    for _ in range(4):
        initialize_parallel(ParallelConfig(), seed=1)
    assert len(c10d._world.pg_map) == groups
    assert _threads() <= threads + 2  # (+2: unrelated helper threads may start meanwhile)
    destroy_parallel()
