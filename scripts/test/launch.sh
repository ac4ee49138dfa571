#!/usr/bin/env bash
# Shared by scripts/test/<dataset>/{Lite,Full,En}.sh: runs test_models.py with the given arguments
# (NPROC, PYTHON and PAN_DRY_RUN as in scripts/launch.sh).
# Run from the repository root: the weights are looked for in ./pretrained/, as released.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" test_models.py "$@"
