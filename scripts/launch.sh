#!/usr/bin/env bash
# Runs a top-level entry point (main.py, test_models.py) in one process or under torchrun.
#   launch.sh <entry.py> <arguments...>
#   One process (one GPU, or the CPU) as is; NPROC=<n> -> torchrun with n processes on this machine
#   (one GPU each).
#   Several machines: NNODES=<machines> NODE_RANK=<0..NNODES-1> RDZV_ENDPOINT=<host:port> on every machine,
#   with NPROC processes each; torchrun then meets the others through c10d rendezvous at RDZV_ENDPOINT
#   (RDZV_ID names the job, default pan). See docs/TRAINING.md, "Several machines".
#   PYTHON=/path/to/python picks the interpreter (default: python).
#   PAN_DRY_RUN=1 prints the command (shell-quoted) instead of running it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
source "$repo/scripts/process_counts.sh"
entry="$1"
shift
if [ "$nnodes" -gt 1 ]; then
    node_rank="${NODE_RANK:-}"
    if ! [[ "$node_rank" =~ ^[0-9]+$ ]] || [ "$node_rank" -ge "$nnodes" ]; then
        echo "NNODES=$nnodes needs NODE_RANK in 0..$((nnodes - 1)), got '$node_rank'" >&2
        exit 2
    fi
    if [ -z "${RDZV_ENDPOINT:-}" ]; then
        echo "NNODES=$nnodes needs RDZV_ENDPOINT=<host:port> of the rendezvous (the same on every machine)" >&2
        exit 2
    fi
    cmd=("$python" -m torch.distributed.run --nnodes="$nnodes" --node_rank="$node_rank" --nproc_per_node="$nproc"
         --rdzv_backend=c10d --rdzv_endpoint="$RDZV_ENDPOINT" --rdzv_id="${RDZV_ID:-pan}" "$repo/$entry" "$@")
elif [ "$nproc" -gt 1 ]; then
    cmd=("$python" -m torch.distributed.run --standalone --nproc_per_node="$nproc" "$repo/$entry" "$@")
else
    cmd=("$python" "$repo/$entry" "$@")
fi
if [ -n "${PAN_DRY_RUN:-}" ]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
exec "${cmd[@]}"
