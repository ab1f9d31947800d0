"""launch/retrieval_service.py end to end, and the start-up refusal in a real server process."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import clustered_vectors
from megatron_retro.errors import UserError
from megatron_retro.retrieval.index import IndexFactory
from megatron_retro.retrieval.service.client import ShardedRetrievalClient
from megatron_retro.retrieval.service.launcher import start_service
from megatron_retro.retrieval.sharding import build_sharded_index

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[2]


def test_launch_script_starts_healthy_shards_and_stops_on_sigterm(tmp_path):
    x = clustered_vectors(500, 16, seed=4)
    build_sharded_index(x, tmp_path / "idx", "flat", 2)
    endpoints = tmp_path / "endpoints.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MEGATRON_RETRO_RETRIEVAL_TOKEN", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch" / "retrieval_service.py"), "--index-dir",
                             str(tmp_path / "idx"), "--shards", "2", "--out", str(endpoints)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()  # printed once every server reports SERVING
        assert "retrieval service healthy: 2 shards x 1 replicas" in line, line + proc.stdout.read()
        assert len(json.loads(endpoints.read_text())["shards"]) == 2
        with ShardedRetrievalClient.from_file(str(endpoints), timeout=10) as client:
            s, i = client.search(x[:5], 3)
        ref = IndexFactory.create("flat", 16)
        ref.add(x, np.arange(500))
        np.testing.assert_array_equal(i, ref.search(x[:5], 3)[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_server_process_refuses_non_loopback_without_token(tmp_path, monkeypatch):
    monkeypatch.delenv("MEGATRON_RETRO_RETRIEVAL_TOKEN", raising=False)
    build_sharded_index(clustered_vectors(10, 4), tmp_path / "idx", "flat", 1)
    t0 = time.monotonic()
    with pytest.raises(UserError, match="exited with code 2 before serving"):
        # refused before any socket is opened: nothing binds to 0.0.0.0
        start_service(str(tmp_path / "idx"), 1, 1, host="0.0.0.0", timeout=60, log_dir=str(tmp_path))
    assert time.monotonic() - t0 < 60
    assert "refusing to serve on a non-loopback address" in (tmp_path / "shard-0-replica-0.log").read_text()
