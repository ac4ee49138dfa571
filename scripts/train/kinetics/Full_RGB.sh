#!/usr/bin/env bash
# Train the RGB stream of PAN Full (RGB) on Kinetics-400: TSM's Kinetics recipe (wd 1e-4); PA streams train longer.
# ResNet-50 (ImageNet), 8 segments, TSM shift 1/8 blockres, VAP; total batch 128, lr 0.02 for that
# total, cosine decay, 50 epochs.
# One GPU as is; NPROC=<n> runs torchrun with n processes of 128/n videos each (same total, same lr).
# Extra arguments go to main.py and win over the ones below (e.g. --root_path /data/kinetics, --resume auto,
# --amp). PAN_DRY_RUN=1 prints the command instead of running it.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../common.sh" 128 kinetics RGB \
    --arch resnet50 --num_segments 8 --gd 20 --lr 0.02 --lr_type cos --epochs 50 \
    --dropout 0.5 --wd 1e-4 --consensus_type avg --eval-freq 1 -j 8 \
    --shift --shift_div 8 --shift_place blockres --npb --VAP \
    "$@"
