#!/usr/bin/env bash
# Runs a top-level entry point (main.py, test_models.py) in one process or under torchrun.
#   launch.sh <entry.py> <arguments...>
#   One process (one GPU, or the CPU) as is; NPROC=<n> -> torchrun with n processes (one GPU each).
#   PYTHON=/path/to/python picks the interpreter (default: python).
#   PAN_DRY_RUN=1 prints the command (shell-quoted) instead of running it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
nproc="${NPROC:-1}"
if ! [[ "$nproc" =~ ^[1-9][0-9]*$ ]]; then
    echo "NPROC must be a positive integer, got '$nproc'" >&2
    exit 2
fi
entry="$1"
shift
if [ "$nproc" -gt 1 ]; then
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
