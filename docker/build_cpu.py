#!/usr/bin/env python
"""Build the CPU image (docker/Dockerfile.cpu): a small build context, then `docker build`.

    python docker/build_cpu.py [--tag megatron-retro:cpu] [--base local/debian:bookworm-minbase]

The context holds the sources the image needs, docker/build-extra/wheels with the CPU build of
torch (`pip download torch==2.13.0 --no-deps` on this host, cached in --cache) and, when
$PIP_CERT (or --pip-cert) names a CA bundle, that bundle as build-extra/ca.crt with
``--build-arg PIP_CERT=/tmp/build-extra/ca.crt`` (a TLS-intercepting proxy; it stays in the build
stage, never in the final image or in git).  The legacy builder caches layers by content, so a
rebuild with unchanged dependencies reuses the slow install layer.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["setup.py", "README.md", "megatron_retro", "kernels", "configs", "launch"]
DOCKER_FILES = ["Dockerfile.cpu", "install.sh", "requirements.py", "constraints.txt", "compose_retrieval.py", "query_retrieval.py",
                "compose.retrieval.yaml"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def torch_wheel(cache: str) -> str:
    """The CPU torch wheel (downloaded once into ``cache`` by this host's pip)."""
    found = glob.glob(os.path.join(cache, "torch-2.13.0*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "torch==2.13.0", "--no-deps", "-d", cache,
                        "-q"], check=True)
        found = glob.glob(os.path.join(cache, "torch-2.13.0*.whl"))
    if not found:
        raise SystemExit(f"build_cpu: no torch-2.13.0 wheel in {cache} after pip download")
    if "+cpu" not in found[0] and "cpu" not in os.path.basename(found[0]):
        print(f"build_cpu: warning: {os.path.basename(found[0])} may not be the CPU build", file=sys.stderr)
    return found[0]


def prepare_context(context: str, cache: str, pip_cert: str | None) -> list[str]:
    """Fill ``context``; return the extra `docker build` arguments it needs."""
    for name in SOURCES:
        src, dst = os.path.join(REPO, name), os.path.join(context, name)
        shutil.copytree(src, dst, ignore=IGNORE) if os.path.isdir(src) else shutil.copy2(src, dst)
    os.makedirs(os.path.join(context, "docker", "build-extra", "wheels"))
    for name in DOCKER_FILES:
        shutil.copy2(os.path.join(REPO, "docker", name), os.path.join(context, "docker", name))
    wheel = torch_wheel(cache)
    os.link(wheel, os.path.join(context, "docker", "build-extra", "wheels", os.path.basename(wheel))) \
        if os.stat(wheel).st_dev == os.stat(context).st_dev else shutil.copy2(wheel, os.path.join(
            context, "docker", "build-extra", "wheels"))
    if pip_cert:
        shutil.copy2(pip_cert, os.path.join(context, "docker", "build-extra", "ca.crt"))
        return ["--build-arg", "PIP_CERT=/tmp/build-extra/ca.crt"]
    return []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", default="megatron-retro:cpu")
    p.add_argument("--base", default="local/debian:bookworm-minbase", help="base image (see .ci/docker_setup.sh)")
    p.add_argument("--pip-cert", default=os.environ.get("PIP_CERT"), help="CA bundle for pip (default $PIP_CERT)")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/megatron-retro-docker/wheels"),
                   help="where the torch wheel is kept between builds")
    p.add_argument("--no-cache", action="store_true", help="docker build --no-cache (what a fresh CI machine pays)")
    args = p.parse_args(argv)
    if args.pip_cert and not os.path.isfile(args.pip_cert):
        print(f"build_cpu: error: --pip-cert {args.pip_cert}: no such file", file=sys.stderr)
        return 2
    os.makedirs(args.cache, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="megatron-retro-cpu-", dir=os.path.dirname(args.cache)) as context:
        extra = prepare_context(context, args.cache, args.pip_cert)
        cmd = ["docker", "build", "-f", os.path.join(context, "docker", "Dockerfile.cpu"), "-t", args.tag,
               "--build-arg", f"BASE_IMAGE={args.base}", *extra, *(["--no-cache"] if args.no_cache else []), context]
        print("build_cpu:", " ".join(cmd), flush=True)
        return subprocess.run(cmd).returncode


if __name__ == "__main__":
    raise SystemExit(main())
