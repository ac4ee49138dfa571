# Sourced by scripts/launch.sh and scripts/train/common.sh: the process counts NPROC (per machine, default 1)
# and NNODES (machines, default 1) as $nproc and $nnodes, each a positive integer or an exit with status 2.
nproc="${NPROC:-1}"
nnodes="${NNODES:-1}"
for var in NPROC NNODES; do
    value="${!var:-1}"
    if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
        echo "$var must be a positive integer, got '$value'" >&2
        exit 2
    fi
done
