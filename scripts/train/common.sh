#!/usr/bin/env bash
# Shared by scripts/train/<dataset>/{Lite,Full_RGB,Full_PA}.sh: runs main.py with a TOTAL batch size
# split over the processes.
#   common.sh <total_batch> <main.py arguments...>
#   One process (one GPU, or the CPU) as is; NPROC=4 -> torchrun with 4 processes, each taking
#   total/4 videos per batch, so the total batch and the scripts' learning rates stay as published
#   (lr 0.01 per 64 videos, linear in the total; change both together if you change one).
#   PYTHON=/path/to/python picks the interpreter (default: python).
#   PAN_DRY_RUN=1 prints the command (shell-quoted) instead of running it.
# Extra arguments come last, so they override the script's (e.g. -b 8 --lr 0.00125 on a small GPU).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python}"
nproc="${NPROC:-1}"
if ! [[ "$nproc" =~ ^[1-9][0-9]*$ ]]; then
    echo "NPROC must be a positive integer, got '$nproc'" >&2
    exit 2
fi
total="$1"
shift
if (( total % nproc )); then
    echo "the total batch of $total videos does not split evenly over NPROC=$nproc processes" >&2
    exit 2
fi
per_process=$(( total / nproc ))
if [ "$nproc" -gt 1 ]; then
    cmd=("$python" -m torch.distributed.run --standalone --nproc_per_node="$nproc" "$repo/main.py")
else
    cmd=("$python" "$repo/main.py")
fi
cmd+=(--batch-size "$per_process" "$@")
if [ -n "${PAN_DRY_RUN:-}" ]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
exec "${cmd[@]}"
