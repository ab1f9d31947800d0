"""Fixtures for the ops tests: this folder on sys.path (slurm_cluster, ops_testlib), small bundled data."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def ops_data_dir(tmp_path_factory):
    from megatron_retro.data.prepare import prepare_bundled_data

    d = tmp_path_factory.mktemp("opsdata") / "bundled"
    prepare_bundled_data(str(d), num_entities=60, vocab_size=512, seed=3, split="90,10,0", progress=False)
    return str(d)
