"""Start N shards x R replicas of the retrieval service as processes and wait until healthy.

Used by ``launch/retrieval_service.py`` and by the multi-process tests.  Each server picks a
free port itself and reports it through a ready file, so there is no port race.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from megatron_retro.errors import UserError

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])


def wait_healthy(endpoint: str, timeout: float, tls_ca: Optional[bytes] = None) -> None:
    """Block until ``endpoint``'s health service says SERVING (raise TimeoutError otherwise)."""
    deadline = time.monotonic() + timeout
    channel = (grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(tls_ca)) if tls_ca
               else grpc.insecure_channel(endpoint))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"retrieval server {endpoint} not healthy after {timeout:.0f}s")
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=min(remaining, 2.0),
                                  wait_for_ready=True)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)


@dataclass
class ServiceProcesses:
    """Handles of the started servers: ``endpoints[shard][replica]`` and their processes."""

    endpoints: list[list[str]]
    procs: dict[tuple[int, int], subprocess.Popen] = field(default_factory=dict)
    workdir: Optional[tempfile.TemporaryDirectory] = None
    tls_ca: Optional[str] = None  # CA file clients must trust (TLS servers only)

    def kill(self, shard: int, replica: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[(shard, replica)]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def write(self, path: str) -> None:
        spec = {"shards": self.endpoints}
        if self.tls_ca:
            spec["tls_ca"] = str(Path(self.tls_ca).resolve())
        Path(path).write_text(json.dumps(spec, indent=1))

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every live server (graceful drain), SIGKILL those that do not exit in time."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None


def start_service(index_dir: str, num_shards: int, replicas: int = 1, host: str = "127.0.0.1",
                  token: Optional[str] = None, extra_args: Sequence[str] = (), timeout: float = 120.0,
                  log_dir: Optional[str] = None, tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                  tls_ca: Optional[str] = None) -> ServiceProcesses:
    """Spawn ``num_shards * replicas`` servers (``megatron-retro serve``) and wait for all to be SERVING.

    With ``tls_cert``/``tls_key`` the servers speak TLS; ``tls_ca`` (default: the certificate
    itself, i.e. self-signed) is what the health checks and clients trust.
    """
    if replicas < 1:
        raise UserError(f"replicas={replicas}: must be >= 1")
    work = tempfile.TemporaryDirectory(prefix="retrieval-service-")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    if token:
        token_file = Path(work.name) / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
    if bool(tls_cert) != bool(tls_key):
        raise UserError("tls_cert and tls_key: give both or neither")
    ca_file = (tls_ca or tls_cert) if tls_cert else None
    ca = Path(ca_file).read_bytes() if ca_file else None
    service = ServiceProcesses([[""] * replicas for _ in range(num_shards)], workdir=work, tls_ca=ca_file)
    try:
        for i in range(num_shards):
            for r in range(replicas):
                ready = Path(work.name) / f"ready-{i}-{r}.json"
                cmd = [sys.executable, "-m", "megatron_retro.retrieval.service.server", "--shard",
                       f"{i}/{num_shards}", "--index-dir", str(index_dir), "--host", host, "--port", "0",
                       "--ready-file", str(ready), *extra_args]
                if token:
                    cmd += ["--token-file", str(token_file)]
                if tls_cert:
                    cmd += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
                log = open(Path(log_dir) / f"shard-{i}-replica-{r}.log", "w") if log_dir else subprocess.DEVNULL
                service.procs[(i, r)] = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        for (i, r), proc in service.procs.items():
            ready = Path(work.name) / f"ready-{i}-{r}.json"
            while not ready.exists():
                if proc.poll() is not None:
                    raise UserError(f"retrieval shard {i} replica {r} exited with code {proc.returncode} "
                                    f"before serving{' (see ' + log_dir + ')' if log_dir else ''}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"retrieval shard {i} replica {r} did not start within {timeout:.0f}s")
                time.sleep(0.05)
            info = json.loads(ready.read_text())
            host_part = f"[{info['host']}]" if ":" in info["host"] else info["host"]
            service.endpoints[i][r] = f"{host_part}:{info['port']}"
        for reps in service.endpoints:
            for endpoint in reps:
                wait_healthy(endpoint, max(1.0, deadline - time.monotonic()), tls_ca=ca)
    except BaseException:
        service.stop()
        raise
    return service
