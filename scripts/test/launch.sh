#!/usr/bin/env bash
# Shared by scripts/test/<dataset>/{Lite,Full,En}.sh: runs test_models.py with the given arguments.
#   one process (one GPU, or the CPU) as is;  NPROC=4 -> torchrun with 4 processes (one GPU each);
#   PYTHON=/path/to/python picks the interpreter (default: python);
#   PAN_DRY_RUN=1 prints the command (shell-quoted) instead of running it.
# Run from the repository root: the weights are looked for in ./pretrained/, as released.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python}"
nproc="${NPROC:-1}"
if ! [[ "$nproc" =~ ^[1-9][0-9]*$ ]]; then
    echo "NPROC must be a positive integer, got '$nproc'" >&2
    exit 2
fi
if [ "$nproc" -gt 1 ]; then
    cmd=("$python" -m torch.distributed.run --standalone --nproc_per_node="$nproc" "$repo/test_models.py" "$@")
else
    cmd=("$python" "$repo/test_models.py" "$@")
fi
if [ -n "${PAN_DRY_RUN:-}" ]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
exec "${cmd[@]}"
