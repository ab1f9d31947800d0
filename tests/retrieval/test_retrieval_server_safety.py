"""Start-up safety of the shard server: non-loopback binds need a token (refused before binding)."""
import numpy as np
import pytest

from megatron_retro.errors import UserError
from megatron_retro.retrieval.service.server import ShardServer, is_loopback, main
from megatron_retro.retrieval.sharding import build_sharded_index, parse_shard


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    build_sharded_index(np.eye(4, dtype=np.float32), d, "flat", 1)
    return d


def test_non_loopback_bind_without_token_is_refused(index_dir, capsys, monkeypatch):
    monkeypatch.delenv("MEGATRON_RETRO_RETRIEVAL_TOKEN", raising=False)
    with pytest.raises(UserError, match="refusing to serve on a non-loopback address without an auth token"):
        ShardServer(str(index_dir), 0, 1, host="0.0.0.0")
    assert main(["--shard", "0/1", "--index-dir", str(index_dir), "--host", "0.0.0.0"]) == 2
    assert "refusing to serve" in capsys.readouterr().err


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.3.4.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("::")


def test_loopback_server_starts_and_stops_in_process(index_dir):
    server = ShardServer(str(index_dir), 0, 1, host="127.0.0.1", port=0)
    assert server.port > 0
    server.stop(grace=0.5)


def test_shard_argument_errors(index_dir):
    with pytest.raises(UserError, match="expected I/N"):
        parse_shard("1-2")
    with pytest.raises(UserError, match="need 0 <= I < N"):
        parse_shard("2/2")
    with pytest.raises(UserError, match="built with 1 shards"):
        ShardServer(str(index_dir), 0, 2)


def test_tls_server_and_client(index_dir, tmp_path):
    import shutil
    import subprocess

    from megatron_retro.retrieval.service.client import RetrievalUnavailableError, ShardedRetrievalClient

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed: cannot make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    server = ShardServer(str(index_dir), 0, 1, host="127.0.0.1", token="t0k",
                         tls=(key.read_bytes(), cert.read_bytes()))
    try:
        with ShardedRetrievalClient([[f"127.0.0.1:{server.port}"]], token="t0k", tls_ca=cert.read_bytes()) as c:
            _, ids = c.search(np.eye(4, dtype=np.float32)[:2], 1)
            np.testing.assert_array_equal(ids, [[0], [1]])
        with pytest.raises(RetrievalUnavailableError):  # a plaintext client cannot talk to it
            ShardedRetrievalClient([[f"127.0.0.1:{server.port}"]], token="t0k", timeout=2)
    finally:
        server.stop(grace=0.5)
