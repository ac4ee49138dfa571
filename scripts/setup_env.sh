#!/usr/bin/env bash
# Source this file: it creates the project's virtual environment on first use,
# installs requirements.txt into it, and activates it.
# Repeated calls skip pip while requirements.txt is unchanged (a hash stamp in the venv).
# PAN_VENV chooses another location for the environment (default: <repo>/.venv).
set -eo pipefail
PAN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PAN_VENV="${PAN_VENV:-$PAN_ROOT/.venv}"
if [ ! -x "$PAN_VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $PAN_VENV"
    python3 -m venv "$PAN_VENV"
fi
stamp="$PAN_VENV/.pan-requirements.sha256"
want="$(sha256sum "$PAN_ROOT/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing requirements.txt (once; later runs skip this step)"
    "$PAN_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PAN_ROOT/requirements.txt"
    echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source "$PAN_VENV/bin/activate"
export PYTHONPATH="$PAN_ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$PAN_ROOT"
