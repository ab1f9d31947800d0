"""Distributed plumbing: process-group init from torchrun / Slurm / mpirun env, megatron parallel
state, and the CPU compatibility layer (without this file a regular `pip install .` left the
package out: find_packages only finds folders with an __init__.py)."""
