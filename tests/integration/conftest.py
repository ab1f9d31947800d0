"""Shared fixtures for end-to-end runs: a small bundled data directory made once per session."""
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory):
    from megatron_retro.data.prepare import prepare_bundled_data

    d = tmp_path_factory.mktemp("data") / "bundled"
    prepare_bundled_data(str(d), num_entities=60, vocab_size=512, seed=3, split="90,10,0", progress=False)
    return str(d)


def run_cli(args, env=None, timeout=600, check=True):
    """Run `python -m megatron_retro.cli ...` as its own process group (a job); return the result."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "megatron_retro.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, start_new_session=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc
