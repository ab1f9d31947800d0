"""Distributed plumbing: process-group init from torchrun / Slurm / mpirun env, megatron parallel
state, and the CPU compatibility layer.

Public API: ``initialize.initialize_parallel(parallel_cfg, seed) -> ParallelContext``,
``initialize.destroy_parallel()``, ``initialize.seed_everything``; ``launch_env`` (rank / world
size from the launcher's environment); ``cpu_compat`` (applied only when CUDA is absent);
``checkpoint_io`` (the file layer of the one checkpoint writer: training checkpoints and PEFT adapters).
"""
