#!/usr/bin/env bash
# PAN Full (RGB + PA streams, scores summed) on Kinetics-400: ResNet-50, 8 segments, 224x224.
# The weights are the best checkpoints of scripts/train/kinetics/*.sh (no released models for this dataset).
# One GPU as is; several with NPROC=<n> (torchrun). Extra arguments go to test_models.py,
# e.g. --device cpu, --root_path /data/kinetics, --amp. PAN_DRY_RUN=1 prints the command.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" kinetics \
    --weights=checkpoint/PAN_RGB_kinetics_resnet50_shift8_blockres_avg_segment8_e50_cos/ckpt.best.pth.tar,checkpoint/PAN_PA_kinetics_resnet50_shift8_blockres_avg_segment8_e100_cos/ckpt.best.pth.tar \
    --VAP --test_segments=8,8 --test_crops=1 --batch_size=64 -j 8 \
    "$@"
