"""The command line of one shard server (`megatron-retro serve`, `python -m ...service.server`).

argparse only: the CLI registers these options without importing grpc or faiss.
"""
from __future__ import annotations

import argparse


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", required=True, metavar="I/N", help="serve shard I of N (0-based)")
    p.add_argument("--index-dir", required=True, help="directory written by `megatron-retro index build`")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default loopback; any other address requires an auth token)")
    p.add_argument("--port", type=int, default=0, help="TCP port (0 = pick a free one, see --ready-file)")
    p.add_argument("--token-file", help="file holding the auth token (else env MEGATRON_RETRO_RETRIEVAL_TOKEN)")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve over TLS (recommended off loopback)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without TLS (only on a trusted network: the token is sent in clear)")
    p.add_argument("--ready-file", help="write {host, port, pid} as JSON here once serving")
    p.add_argument("--max-batch", type=int, default=4096, help="largest query batch accepted")
    p.add_argument("--max-k", type=int, default=1024, help="largest k accepted")
    p.add_argument("--max-message-mb", type=int, default=64, help="gRPC send/receive limit in MiB")
    p.add_argument("--workers", type=int, default=4, help="gRPC worker threads")
    p.add_argument("--threads", type=int, help="faiss OpenMP threads (default: all cores)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on SIGTERM")
    p.add_argument("--gpu", choices=["auto", "yes", "no"], default="auto", help="search on a GPU (faiss-gpu)")
    p.add_argument("--nprobe", type=int, help="IVF lists probed per query (default: as built)")
    p.add_argument("--ef-search", type=int, help="HNSW search depth (default: as built)")
    p.add_argument("--log-interval", type=float, default=60.0,
                   help="seconds between traffic log lines (requests, queries, latency); 0 = none")
