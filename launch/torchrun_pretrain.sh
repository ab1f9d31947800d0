#!/usr/bin/env bash
# Pretrain on one node with torchrun: launch/torchrun_pretrain.sh NPROC CONFIG [--tp T --pp P ... key=value ...]
#   e.g. launch/torchrun_pretrain.sh 4 configs/models/gpt-tiny.yaml --tp 2 --pp 2
# Multi-node: set NNODES, NODE_RANK and RDZV_ENDPOINT=host:port on every node.
set -euo pipefail
nproc=${1:?usage: $0 NPROC CONFIG [args...]}
config=${2:?usage: $0 NPROC CONFIG [args...]}
shift 2
if [[ -n "${RDZV_ENDPOINT:-}" ]]; then
  rdzv=(--nnodes "${NNODES:?set NNODES}" --node-rank "${NODE_RANK:?set NODE_RANK}" --rdzv-backend c10d
        --rdzv-endpoint "$RDZV_ENDPOINT" --rdzv-id "${RDZV_ID:-megatron-retro}")
else
  rdzv=(--standalone)
fi
exec torchrun "${rdzv[@]}" --nproc-per-node "$nproc" -m megatron_retro.cli pretrain --config "$config" "$@"
