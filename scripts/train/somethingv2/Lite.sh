#!/usr/bin/env bash
# Train the Lite stream (Lite) on Something-Something V2: as V1 (TSM trains both versions alike).
# ResNet-50 (ImageNet), 8 segments, TSM shift 1/8 blockres, VAP; total batch 64, lr 0.01 for that
# total, x0.1 at epochs 30 60, 80 epochs.
# One GPU as is; NPROC=<n> runs torchrun with n processes of 64/n videos each (same total, same lr).
# Extra arguments go to main.py and win over the ones below (e.g. --root_path /data/somethingv2, --resume auto,
# --amp). PAN_DRY_RUN=1 prints the command instead of running it.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../common.sh" 64 somethingv2 Lite \
    --arch resnet50 --num_segments 8 --gd 20 --lr 0.01 --lr_type step --lr_steps 30 60 --epochs 80 \
    --dropout 0.5 --consensus_type avg --eval-freq 1 -j 8 \
    --shift --shift_div 8 --shift_place blockres --npb --VAP \
    "$@"
