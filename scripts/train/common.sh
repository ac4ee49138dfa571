#!/usr/bin/env bash
# Shared by scripts/train/<dataset>/{Lite,Full_RGB,Full_PA}.sh: runs main.py with a TOTAL batch size
# split over the processes.
#   common.sh <total_batch> <main.py arguments...>
#   NPROC=4 -> torchrun with 4 processes, each taking total/4 videos per batch, so the total batch and
#   the scripts' learning rates stay as published (lr 0.01 per 64 videos, linear in the total; change
#   both together if you change one). With NNODES machines the total splits over NPROC x NNODES processes.
#   NPROC, NNODES, NODE_RANK, RDZV_ENDPOINT, PYTHON and PAN_DRY_RUN as in scripts/launch.sh.
# Extra arguments come last, so they override the script's (e.g. -b 8 --lr 0.00125 on a small GPU).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../process_counts.sh"
total="$1"
shift
processes=$(( nproc * nnodes ))
if (( total % processes )); then
    echo "the total batch of $total videos does not split evenly over $processes processes (NPROC=$nproc x NNODES=$nnodes)" >&2
    exit 2
fi
exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" main.py --batch-size "$(( total / processes ))" "$@"
