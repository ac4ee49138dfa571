#!/usr/bin/env bash
# PAN Lite (the Lite stream alone) on Jester: ResNet-50, 8 segments, 224x224.
# The weights are the best checkpoints of scripts/train/jester/*.sh (no released models for this dataset).
# One GPU as is; several with NPROC=<n> (torchrun). Extra arguments go to test_models.py,
# e.g. --device cpu, --root_path /data/jester, --amp. PAN_DRY_RUN=1 prints the command.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" jester \
    --weights=checkpoint/PAN_Lite_jester_resnet50_shift8_blockres_avg_segment8_e25/ckpt.best.pth.tar \
    --VAP --test_segments=8 --test_crops=1 --batch_size=64 -j 8 \
    "$@"
