#!/usr/bin/env bash
# One retrieval shard server per Slurm task (called by retrieval_pretrain.sbatch through srun):
# task SLURM_PROCID serves shard PROCID % SHARDS (replica PROCID / SHARDS) with `megatron-retro
# serve` on this node's address and writes its ready file to RUN_DIR/ready-<shard>-<replica>.json.
#   srun --ntasks=$((SHARDS*REPLICAS)) launch/slurm/serve_shard_task.sh INDEX_DIR SHARDS RUN_DIR [serve args...]
# A non-loopback bind needs the auth token: MEGATRON_RETRO_RETRIEVAL_TOKEN or --token-file, and TLS:
# RETRIEVAL_TLS_CERT + RETRIEVAL_TLS_KEY (PEM files), or RETRIEVAL_INSECURE=1 on a trusted network.
set -euo pipefail
index_dir=${1:?usage: $0 INDEX_DIR SHARDS RUN_DIR [serve args...]}
shards=${2:?usage: $0 INDEX_DIR SHARDS RUN_DIR [serve args...]}
run_dir=${3:?usage: $0 INDEX_DIR SHARDS RUN_DIR [serve args...]}
shift 3
shard=$((SLURM_PROCID % shards))
replica=$((SLURM_PROCID / shards))
host=${RETRIEVAL_HOST:-$(hostname -f)}
port=$((${RETRIEVAL_BASE_PORT:-31000} + ${SLURM_LOCALID:-0}))
tls=()
if [[ -n ${RETRIEVAL_TLS_CERT:-} ]]; then tls=(--tls-cert "$RETRIEVAL_TLS_CERT" --tls-key "${RETRIEVAL_TLS_KEY:?}");
elif [[ ${RETRIEVAL_INSECURE:-0} == 1 ]]; then tls=(--insecure); fi
exec "${PYTHON:-python3}" -m megatron_retro.cli serve --shard "$shard/$shards" --index-dir "$index_dir" \
  --host "$host" --port "$port" --ready-file "$run_dir/ready-$shard-$replica.json" ${tls[@]+"${tls[@]}"} "$@"
