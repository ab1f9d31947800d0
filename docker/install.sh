#!/usr/bin/env bash
# The one install script of both images: docker/Dockerfile (GPU, NGC PyTorch base) and
# docker/Dockerfile.cpu (CPU, a locally bootstrapped Debian).  Run from the source folder:
#   docker/install.sh gpu|cpu deps      pinned dependencies (setup.py's list, docker/requirements.py)
#   docker/install.sh gpu|cpu project   megatron_retro itself (--no-deps, from the copied sources), then a smoke check
# gpu: the base image's torch / Triton / Transformer Engine stay as they are (frozen as constraints).
# cpu: torch is the CPU wheel in docker/build-extra/wheels (PyPI's torch is the multi-GB CUDA build).
# PIP_CERT (optional): a CA bundle pip trusts, for a TLS-intercepting proxy; it is a build argument
# naming a file in docker/build-extra (never committed, see docker/build-extra/README.md).
set -euo pipefail
mode=${1:?usage: install.sh gpu|cpu deps|project}
step=${2:?usage: install.sh gpu|cpu deps|project}
extra=/tmp/build-extra
pip_args=(--no-cache-dir --disable-pip-version-check)
if [ -n "${PIP_CERT:-}" ]; then pip_args+=(--cert "$PIP_CERT"); fi
constraints=/tmp/base-constraints.txt

case "$mode:$step" in
  gpu:deps|cpu:deps)
    if [ "$mode" = cpu ]; then
      pip install "${pip_args[@]}" "$extra"/wheels/torch-2.13.0*.whl   # its small deps from the index
    fi
    pip list --format=freeze | grep -iE '^(torch|triton|transformer[-_]engine|pytorch-triton)==' > "$constraints" || true
    python docker/requirements.py "$mode" --setup setup.py > /tmp/requirements.txt
    # docker/constraints.txt: the versions CI tests with (minus what a GPU base image already has)
    pip list --format=freeze | cut -d= -f1 | tr '[:upper:]_' '[:lower:]-' > /tmp/installed.txt
    if [ "$mode" = gpu ]; then
      awk -F'==' 'NR==FNR{have[$1]=1; next} /^#/ {next} {n=tolower($1); gsub("_","-",n); if (!(n in have)) print}' \
        /tmp/installed.txt docker/constraints.txt > /tmp/lock.txt
    else
      grep -v '^#' docker/constraints.txt > /tmp/lock.txt
    fi
    pip install "${pip_args[@]}" -c "$constraints" -c /tmp/lock.txt -r /tmp/requirements.txt
    ;;
  gpu:project|cpu:project)
    # a regular install from this folder: no build isolation (no index access), no setup.py develop
    pip install "${pip_args[@]}" --no-deps --no-build-isolation .
    # from / : here the source folder megatron_retro/ (without kernels/) would shadow the install
    (cd / && python -c "import torch, faiss, megatron.core, megatron_retro.kernels; print('torch', torch.__version__, '| faiss', faiss.__version__)" \
       && megatron-retro --help > /dev/null)
    ;;
  *) echo "install.sh: unknown mode/step '$mode $step'" >&2; exit 2 ;;
esac
