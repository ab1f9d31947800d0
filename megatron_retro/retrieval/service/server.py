"""One shard server of the retrieval service (``megatron-retro serve --shard I/N``).

Loads ``shard-I-of-N.faiss`` from an index directory and answers ``Search`` / ``Info`` over
gRPC, with the standard ``grpc.health.v1`` service.  Safety rules:

* binds to 127.0.0.1 unless ``--host`` says otherwise; a non-loopback bind without an auth
  token is refused at start-up;
* with a token, every Retrieval call must carry ``authorization: Bearer <token>``
  (UNAUTHENTICATED otherwise; health checks need none);
* ``--tls-cert/--tls-key`` serve over TLS; off loopback TLS is required (the token would otherwise
  cross the network in clear) unless ``--insecure`` says the network is trusted;
* the port is bound exclusively (``grpc.so_reuseport=0``): a second server on a taken port fails
  at start-up with one line instead of silently sharing it;
* malformed requests (wrong dim, NaN, k or batch out of range, short payload) get
  INVALID_ARGUMENT and the server keeps serving; the message size limit is set explicitly;
* SIGTERM/SIGINT: health turns NOT_SERVING, in-flight calls get ``--grace`` seconds, exit 0.

Every ``--log-interval`` seconds (60) a shard logs one line of traffic: requests, query rows and
search latency (mean / max) over the interval; ``Info`` reports the totals since start.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Optional

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from megatron_retro.errors import UserError
from megatron_retro.io_atomic import write_text_atomic
from megatron_retro.retrieval.build_id import BuildIdentity, manifest_identity
from megatron_retro.retrieval.index import FaissIndex
from megatron_retro.retrieval.service import retrieval_pb2 as pb
from megatron_retro.retrieval.service import retrieval_pb2_grpc as pb_grpc
from megatron_retro.retrieval.sharding import load_manifest, shard_path

log = logging.getLogger("megatron_retro.retrieval.server")

SERVICE_NAME = "megatron_retro.retrieval.Retrieval"
TOKEN_ENV = "MEGATRON_RETRO_RETRIEVAL_TOKEN"


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:  # a host name: loopback only if every address it resolves to is
            infos = socket.getaddrinfo(host, None)
        except socket.gaierror:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


class _TokenInterceptor(grpc.ServerInterceptor):
    """Rejects Retrieval calls without the right bearer token (health checks pass freely)."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong auth token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        if details.method.startswith("/grpc.health.v1."):
            return continuation(details)
        got = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(got.encode() if isinstance(got, str) else got, self._expected):
            return continuation(details)
        return self._deny


class Traffic:
    """Search calls, query rows and latencies of one shard (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = self.queries = 0
        self._window: list[float] = []   # latencies (s) since the last report
        self._window_queries = 0

    def record(self, rows: int, seconds: float) -> None:
        with self._lock:
            self.requests += 1
            self.queries += rows
            self._window.append(seconds)
            self._window_queries += rows

    def report(self, interval: float) -> str:
        """One log line over the interval since the last report (and reset it)."""
        with self._lock:
            lat, rows = self._window, self._window_queries
            self._window, self._window_queries = [], 0
            total = self.queries
        if not lat:
            return f"last {interval:.0f}s: 0 requests (total {total} queries)"
        return (f"last {interval:.0f}s: {len(lat)} requests, {rows} queries, latency mean "
                f"{1e3 * sum(lat) / len(lat):.1f} ms max {1e3 * max(lat):.1f} ms (total {total} queries)")


class RetrievalServicer(pb_grpc.RetrievalServicer):
    def __init__(self, index: FaissIndex, shard: int, num_shards: int, build_id: str,
                 max_batch: int, max_k: int, identity: Optional[BuildIdentity] = None):
        self.index, self.shard, self.num_shards, self.build_id = index, shard, num_shards, build_id
        self.max_batch, self.max_k = max_batch, max_k
        self.identity = identity
        self.traffic = Traffic()

    def _invalid(self, context, message: str):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    def Search(self, request, context):
        n, dim, k = request.num_queries, request.dim, request.k
        if not 1 <= n <= self.max_batch:
            self._invalid(context, f"num_queries={n}: must be in [1, {self.max_batch}]")
        if dim != self.index.dim:
            self._invalid(context, f"dim={dim}: this shard holds dim {self.index.dim}")
        if not 1 <= k <= self.max_k:
            self._invalid(context, f"k={k}: must be in [1, {self.max_k}]")
        if len(request.queries) != n * dim * 4:
            self._invalid(context, f"queries: {len(request.queries)} bytes, expected "
                                   f"num_queries*dim*4={n * dim * 4}")
        q = np.frombuffer(request.queries, dtype="<f4").reshape(n, dim)  # [n, d]
        if not np.isfinite(q).all():
            self._invalid(context, "queries: contain NaN or infinite values")
        t0 = time.perf_counter()
        scores, ids = self.index.search(q, int(k))  # [n, k] each
        self.traffic.record(int(n), time.perf_counter() - t0)
        return pb.SearchResponse(scores=scores.astype("<f4").tobytes(), ids=ids.astype("<i8").tobytes(),
                                 num_queries=n, k=k, shard=self.shard, num_shards=self.num_shards,
                                 build_id=self.build_id)

    def Info(self, request, context):
        ident = self.identity
        extra = {} if ident is None else {"embedder": ident.embedder, "chunk_length": ident.chunk_length,
                                          "neighbour_length": ident.neighbour_length,
                                          "store_digest": ident.store_digest}
        return pb.InfoResponse(shard=self.shard, num_shards=self.num_shards, dim=self.index.dim,
                               ntotal=self.index.ntotal, factory=self.index.factory,
                               metric=self.index.metric, max_batch=self.max_batch, max_k=self.max_k,
                               build_id=self.build_id, requests_served=self.traffic.requests,
                               queries_served=self.traffic.queries, **extra)


class ShardServer:
    """A started gRPC server for one shard; ``stop`` drains in-flight calls."""

    def __init__(self, index_dir: str, shard: int, num_shards: int, host: str = "127.0.0.1",
                 port: int = 0, token: Optional[str] = None, max_batch: int = 4096, max_k: int = 1024,
                 max_message_bytes: int = 64 << 20, workers: int = 4, use_gpu: str | bool = "auto",
                 nprobe: Optional[int] = None, ef_search: Optional[int] = None,
                 tls: Optional[tuple[bytes, bytes]] = None, insecure: bool = False):
        if not is_loopback(host) and not token:
            raise UserError(f"--host {host}: refusing to serve on a non-loopback address without an auth "
                            f"token (pass --token-file or set {TOKEN_ENV})")
        if not is_loopback(host) and tls is None and not insecure:
            raise UserError(f"--host {host}: refusing to serve without TLS on a non-loopback address (the auth "
                            "token would cross the network in clear): pass --tls-cert/--tls-key, or --insecure "
                            "on a trusted network")
        manifest = load_manifest(index_dir)
        if manifest["num_shards"] != num_shards:
            raise UserError(f"--shard {shard}/{num_shards}: {index_dir} was built with "
                            f"{manifest['num_shards']} shards")
        self.index = FaissIndex.load(shard_path(index_dir, shard, num_shards), use_gpu=use_gpu,
                                     nprobe=nprobe, efSearch=ef_search)
        self.identity = manifest_identity(manifest, index_dir) if manifest.get("identity") else None
        self.health = health.HealthServicer()
        interceptors = [_TokenInterceptor(token)] if token else []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=interceptors,
                                  options=channel_options(max_message_bytes) + [("grpc.so_reuseport", 0)])
        self.servicer = RetrievalServicer(self.index, shard, num_shards, manifest["build_id"], max_batch, max_k,
                                          identity=self.identity)
        pb_grpc.add_RetrievalServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:  # grpcio >= 1.85 raises on a taken port, older versions return 0
            if tls is not None:  # (private key PEM, certificate chain PEM)
                self.port = self.server.add_secure_port(bind, grpc.ssl_server_credentials([tls]))
            else:
                self.port = self.server.add_insecure_port(bind)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise UserError(f"--host {host} --port {port}: cannot bind {bind} (the port is taken by another "
                            "process, or the address is not on this machine)")
        self.host = host
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()  # NOT_SERVING for every service
        self.server.stop(grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()


def _write_ready_file(path: str, info: dict) -> None:
    write_text_atomic(path, json.dumps(info))


def read_token(token_file: Optional[str]) -> Optional[str]:
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise UserError(f"--token-file {token_file}: {e.strerror}") from None
        if not token:
            raise UserError(f"--token-file {token_file}: file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def read_tls(cert_file: Optional[str], key_file: Optional[str]) -> Optional[tuple[bytes, bytes]]:
    """(key PEM, cert PEM) from --tls-key/--tls-cert, or None; both or neither must be given."""
    if not cert_file and not key_file:
        return None
    if not (cert_file and key_file):
        raise UserError("--tls-cert and --tls-key: give both or neither")
    try:
        return Path(key_file).read_bytes(), Path(cert_file).read_bytes()
    except OSError as e:
        raise UserError(f"{e.filename}: {e.strerror}") from None


def run(args) -> int:
    """Entry point of ``megatron-retro serve``: start, report readiness, serve until SIGTERM."""
    from megatron_retro.retrieval.sharding import parse_shard

    logging.basicConfig(level=logging.INFO, format="%(asctime)s shard %(message)s", stream=sys.stderr)
    shard, num_shards = parse_shard(args.shard)
    if getattr(args, "threads", None):
        import faiss

        faiss.omp_set_num_threads(args.threads)
    server = ShardServer(args.index_dir, shard, num_shards, host=args.host, port=args.port,
                         token=read_token(args.token_file), max_batch=args.max_batch, max_k=args.max_k,
                         max_message_bytes=args.max_message_mb << 20, workers=args.workers,
                         use_gpu={"auto": "auto", "yes": True, "no": False}[args.gpu],
                         nprobe=args.nprobe, ef_search=args.ef_search,
                         tls=read_tls(getattr(args, "tls_cert", None), getattr(args, "tls_key", None)),
                         insecure=getattr(args, "insecure", False))
    stopping = threading.Event()

    def on_signal(signum, frame):
        if not stopping.is_set():
            stopping.set()
            log.info("%d/%d: signal %d, draining for %.1fs (%d queries served)", shard, num_shards, signum,
                     args.grace, server.servicer.traffic.queries)
            threading.Thread(target=server.stop, args=(args.grace,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("%d/%d: serving %d vectors (%s) on %s, build %s", shard, num_shards, server.index.ntotal,
             server.index.factory, server.address,
             server.identity.describe() if server.identity else "without identity")
    interval = getattr(args, "log_interval", 60.0)

    def log_traffic():
        while not stopping.wait(interval):
            log.info("%d/%d: %s", shard, num_shards, server.servicer.traffic.report(interval))

    if interval > 0:
        threading.Thread(target=log_traffic, daemon=True, name="traffic-log").start()
    if args.ready_file:
        _write_ready_file(args.ready_file, {"host": args.host, "port": server.port, "pid": os.getpid(),
                                            "shard": shard, "num_shards": num_shards})
    server.wait()
    return 0


def main(argv=None) -> int:
    import argparse

    from megatron_retro.retrieval.service.args import add_serve_args

    parser = argparse.ArgumentParser(prog="megatron-retro serve", description=__doc__.splitlines()[0])
    add_serve_args(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:
        from megatron_retro.errors import describe_failure

        code, message = describe_failure(e)
        print(f"megatron-retro serve: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
