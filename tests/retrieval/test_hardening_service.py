"""Shard server and client failures are one line and nothing is silently shared or sent in clear:
a taken port, a second server on the same port (no SO_REUSEPORT), plain TCP off loopback without
--insecure, a wrong token (a UserError the CLI reports with exit 2)."""
import socket

import numpy as np
import pytest

from megatron_retro.errors import EXIT_USER, UserError, describe_failure
from megatron_retro.retrieval.service.server import ShardServer, main
from megatron_retro.retrieval.sharding import build_sharded_index


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    build_sharded_index(np.eye(4, dtype=np.float32), d, "flat", 1)
    return d


def test_taken_port_is_one_line(index_dir, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UserError) as info:
            ShardServer(str(index_dir), 0, 1, port=port)
        assert f"--port {port}: cannot bind 127.0.0.1:{port} (the port is taken" in str(info.value)
        assert main(["--shard", "0/1", "--index-dir", str(index_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"megatron-retro serve: error: --host 127.0.0.1 --port {port}"), err


def test_two_servers_cannot_share_a_port(index_dir):
    first = ShardServer(str(index_dir), 0, 1, port=0)
    try:
        with pytest.raises(UserError, match=f"cannot bind 127.0.0.1:{first.port}"):
            ShardServer(str(index_dir), 0, 1, port=first.port)
    finally:
        first.stop(grace=0.1)


def test_plain_tcp_off_loopback_needs_insecure(index_dir, capsys):
    with pytest.raises(UserError) as info:
        ShardServer(str(index_dir), 0, 1, host="0.0.0.0", token="t0k")
    assert "refusing to serve without TLS on a non-loopback address" in str(info.value)
    assert "--insecure" in str(info.value) and "\n" not in str(info.value)
    server = ShardServer(str(index_dir), 0, 1, host="0.0.0.0", token="t0k", insecure=True)  # explicit opt-in
    assert server.port > 0
    server.stop(grace=0.1)


def test_wrong_token_is_a_user_error(index_dir):
    from megatron_retro.retrieval.service.client import RetrievalRequestError, ShardedRetrievalClient

    server = ShardServer(str(index_dir), 0, 1, token="right")
    try:
        with pytest.raises(RetrievalRequestError) as info:
            with ShardedRetrievalClient([[f"127.0.0.1:{server.port}"]], token="wrong", timeout=5) as c:
                c.search(np.eye(4, dtype=np.float32)[:1], 1)
        code, message = describe_failure(info.value)
        assert code == EXIT_USER and "UNAUTHENTICATED" in message and "\n" not in message, message
        assert isinstance(info.value, RuntimeError)  # callers catching RuntimeError still do
    finally:
        server.stop(grace=0.1)
