#!/usr/bin/env bash
# Pretrain under Open MPI: launch/mpirun_pretrain.sh NP CONFIG [pretrain args...]
#   launch/mpirun_pretrain.sh 2 configs/models/gpt-tiny.yaml --steps 10
#   HOSTFILE=hosts.txt launch/mpirun_pretrain.sh 16 configs/models/gpt-8.52b.yaml --tp 4
# Ranks come from OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK (megatron_retro/parallel/launch_env.py);
# the rendezvous is MASTER_ADDR:MASTER_PORT (default: the first host of HOSTFILE, else
# 127.0.0.1, port 29500). MPIRUN_ARGS adds mpirun options (e.g. "--allow-run-as-root
# --oversubscribe" in a container, "--map-by ppr:8:node" on GPU nodes). PYTHON picks the interpreter.
set -euo pipefail
np=${1:?usage: $0 NP CONFIG [args...]}
config=${2:?usage: $0 NP CONFIG [args...]}
shift 2
hosts=()
if [[ -n "${HOSTFILE:-}" ]]; then
  hosts=(--hostfile "$HOSTFILE")
  default_master=$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$HOSTFILE")
fi
export MASTER_ADDR=${MASTER_ADDR:-${default_master:-127.0.0.1}}
export MASTER_PORT=${MASTER_PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# shellcheck disable=SC2086  # MPIRUN_ARGS is a list of options
exec mpirun -np "$np" "${hosts[@]}" ${MPIRUN_ARGS:-} -x MASTER_ADDR -x MASTER_PORT -x OMP_NUM_THREADS -x PATH \
  ${PYTHONPATH:+-x PYTHONPATH} "${PYTHON:-python3}" -m megatron_retro.cli pretrain --config "$config" --no-progress "$@"
