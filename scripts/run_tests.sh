#!/usr/bin/env bash
# The README's test command: sets up the environment, then runs the whole suite (CPU, offline).
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k dataset -x`.
set -eo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
python -m pytest "$@"
