#!/usr/bin/env bash
# PAN Lite (the Lite stream alone) on Something-Something V1: ResNet-50, 8 segments, 224x224.
# Paper, Something-Something V1 val top-1 / top-5: 48.0 / 76.1.
# One GPU as is; several with NPROC=<n> (torchrun). Extra arguments go to test_models.py,
# e.g. --device cpu, --root_path /data/something, --amp. PAN_DRY_RUN=1 prints the command.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" something \
    --weights=pretrained/PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e80.pth.tar \
    --VAP --test_segments=8 --test_crops=1 --batch_size=64 -j 4 \
    "$@"
