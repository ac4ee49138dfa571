#!/usr/bin/env bash
# PAN En (Lite + RGB + PA, full-resolution crop, two clips) on HMDB51 (split 1): ResNet-50, 8 segments, 224x224.
# The weights are the best checkpoints of scripts/train/hmdb51/*.sh (no released models for this dataset).
# One GPU as is; several with NPROC=<n> (torchrun). Extra arguments go to test_models.py,
# e.g. --device cpu, --root_path /data/hmdb51, --amp. PAN_DRY_RUN=1 prints the command.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" hmdb51 \
    --weights=checkpoint/PAN_Lite_hmdb51_resnet50_shift8_blockres_avg_segment8_e25/ckpt.best.pth.tar,checkpoint/PAN_RGB_hmdb51_resnet50_shift8_blockres_avg_segment8_e25/ckpt.best.pth.tar,checkpoint/PAN_PA_hmdb51_resnet50_shift8_blockres_avg_segment8_e25/ckpt.best.pth.tar \
    --VAP --test_segments=8,8,8 --test_crops=1 --batch_size=16 -j 8 \
    --full_res --twice_sample \
    "$@"
