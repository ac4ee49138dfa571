#!/usr/bin/env bash
# PAN En (Lite + RGB + PA, full-resolution crop, two clips) on Something-Something V2: ResNet-50, 8 segments, 224x224.
# Paper, Something-Something V2 val top-1 / top-5: 66.2 / 90.1.
# One GPU as is; several with NPROC=<n> (torchrun). Extra arguments go to test_models.py,
# e.g. --device cpu, --root_path /data/somethingv2, --amp. PAN_DRY_RUN=1 prints the command.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" somethingv2 \
    --weights=pretrained/PAN_Lite_somethingv2_resnet50_shift8_blockres_avg_segment8_e80.pth.tar,pretrained/PAN_RGB_somethingv2_resnet50_shift8_blockres_avg_segment8_e50.pth.tar,pretrained/PAN_PA_somethingv2_resnet50_shift8_blockres_avg_segment8_e80.pth.tar \
    --VAP --test_segments=8,8,8 --test_crops=1 --batch_size=64 -j 4 \
    --full_res --twice_sample \
    "$@"
