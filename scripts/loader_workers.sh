# Sourced by scripts/quickstart.sh and scripts/compare.sh: loader_workers DEVICE prints main.py's -j for DEVICE
# (cpu, cuda, cuda:N or auto). A GPU needs loader workers to keep it fed: half the cores, at least one. On the
# CPU the loader runs in the training process (0): a loader process competes with the step's threads for the
# same cores and slows the step by more than the loading costs (the quickstart on a 2-core AVX2 EPYC: two
# epochs 56.8 s with -j 0, 61.4 s with -j 1).
loader_workers() {
    local device="$1" half=$(( $(nproc) / 2 ))
    [ "$half" -ge 1 ] || half=1
    if [ "$device" = cpu ] || { [ "$device" = auto ] &&
            ! python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; }; then
        echo 0
    else
        echo "$half"
    fi
}
