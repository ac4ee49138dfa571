#!/usr/bin/env bash
# Train the RGB stream of PAN Full (RGB) on HMDB51 (split 1): fine-tuned from Kinetics as in TSM (--tune_from).
# ResNet-50 (ImageNet), 8 segments, TSM shift 1/8 blockres, VAP; total batch 64, lr 0.001 for that
# total, x0.1 at epochs 10 20, 25 epochs.
# Starts from the Kinetics model of scripts/train/kinetics/Full_RGB.sh; PAN_TUNE_FROM=<file> names another.
# One GPU as is; NPROC=<n> runs torchrun with n processes of 64/n videos each (same total, same lr).
# Extra arguments go to main.py and win over the ones below (e.g. --root_path /data/hmdb51, --resume auto,
# --amp). PAN_DRY_RUN=1 prints the command instead of running it.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../common.sh" 64 hmdb51 RGB \
    --arch resnet50 --num_segments 8 --gd 20 --lr 0.001 --lr_type step --lr_steps 10 20 --epochs 25 \
    --dropout 0.8 --consensus_type avg --eval-freq 1 -j 8 \
    --shift --shift_div 8 --shift_place blockres --npb --VAP \
    --tune_from "${PAN_TUNE_FROM:-checkpoint/PAN_RGB_kinetics_resnet50_shift8_blockres_avg_segment8_e50_cos/ckpt.best.pth.tar}" \
    "$@"
