#!/usr/bin/env python
"""Start N shards x R replicas of the retrieval service and wait until all report healthy.

    python launch/retrieval_service.py --index-dir runs/index --shards 2 --replicas 2 \
        --out runs/index/endpoints.json

Writes ``{"shards": [[host:port, ...], ...]}`` (one list of replicas per shard) for
``ShardedRetrievalClient.from_file``, then keeps the servers running until SIGINT/SIGTERM,
which it forwards (graceful drain).  Binds to 127.0.0.1 unless --host is given; a
non-loopback --host needs --token-file (the servers refuse to start otherwise).
"""
import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main() -> int:
    from megatron_retro.errors import UserError
    from megatron_retro.retrieval.service.launcher import start_service
    from megatron_retro.retrieval.service.server import read_token

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index-dir", required=True)
    p.add_argument("--shards", type=int, required=True, help="N: must match the index build")
    p.add_argument("--replicas", type=int, default=1, help="R servers per shard")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--token-file", help="auth token file (else env MEGATRON_RETRO_RETRIEVAL_TOKEN)")
    p.add_argument("--tls-cert", help="PEM certificate: servers speak TLS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-ca", help="CA clients trust (default: --tls-cert, i.e. self-signed)")
    p.add_argument("--out", help="endpoints JSON to write (default <index-dir>/endpoints.json)")
    p.add_argument("--log-dir", help="one log file per server here")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all to be healthy")
    p.add_argument("serve_args", nargs=argparse.REMAINDER, help="after --: extra `megatron-retro serve` flags")
    args = p.parse_args()
    extra = [a for a in args.serve_args if a != "--"]
    try:
        if args.log_dir:
            Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        svc = start_service(args.index_dir, args.shards, args.replicas, host=args.host,
                            token=read_token(args.token_file), extra_args=extra, timeout=args.timeout,
                            log_dir=args.log_dir, tls_cert=args.tls_cert, tls_key=args.tls_key,
                            tls_ca=args.tls_ca)
    except (UserError, TimeoutError) as e:
        print(f"retrieval_service: error: {e}", file=sys.stderr)
        return 2
    out = args.out or str(Path(args.index_dir) / "endpoints.json")
    svc.write(out)
    print(f"retrieval service healthy: {args.shards} shards x {args.replicas} replicas; endpoints in {out}",
          flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        dead = [key for key, proc in svc.procs.items() if proc.poll() is not None]
        if len(dead) == len(svc.procs):
            print("retrieval_service: every server has exited", file=sys.stderr)
            break
    svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
