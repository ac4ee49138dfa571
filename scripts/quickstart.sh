#!/usr/bin/env bash
# Placeholder until the synthetic quickstart lands: a forward pass of every model variant.
set -eo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
python tools/smoke_forward.py
