#!/usr/bin/env bash
# The comparison that makes the paper's point on the synthetic mirror-pair dataset:
# TSN (RGB, no shift, average consensus), TSM (RGB + temporal shift), PAN PA, PAN Lite, and
# PAN Full (the RGB stream and the PA stream fused by test_models.py), all with the same
# backbone (resnet18 from scratch), data, training budget and seed as scripts/quickstart.sh.
# Writes a Markdown table (top-1, mirror-pair accuracy, direction accuracy within the pair)
# to <out>/results.md and into README.md (between its compare-results markers), and the four
# trainings' curves overlaid to <out>/curves.png (tools/plot_run.py). A frame-level
# model (TSN) cannot tell the two classes of a pair apart: expect about 50% direction accuracy
# for it, and far more for the temporal models.
#
#   bash scripts/compare.sh          # 4 trainings of the quickstart's size, then 5 evaluations (docs/QUICKSTART.md)
#
# Environment (all optional):
#   PAN_COMPARE_OUT     output folder (default: runs/compare)
#   PAN_COMPARE_DATA    dataset folder (default: data/synthetic, generated if missing)
#   PAN_COMPARE_DEVICE  cpu, cuda or auto (default: auto)
#   PAN_COMPARE_EPOCHS  training epochs of every model (default: 20, the quickstart's)
# Running it again resumes unfinished trainings and skips finished ones.
set -eo pipefail
caller_dir="$PWD"
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"

absolute() { case "$1" in /*) echo "$1" ;; *) echo "$caller_dir/$1" ;; esac; }
out="$(absolute "${PAN_COMPARE_OUT:-runs/compare}")"
data="$(absolute "${PAN_COMPARE_DATA:-data/synthetic}")"
device="${PAN_COMPARE_DEVICE:-auto}"
source "$(dirname "${BASH_SOURCE[0]}")/loader_workers.sh"
workers=$(loader_workers "$device")
# The quickstart's full configuration (see scripts/quickstart.sh): keep both scripts in step.
data_flags=(--size 32 --frames 16 --train-per-class 100 --val-per-class 20)
train_flags=(--arch resnet18 --num_segments 4 --crop_size 24 --scale_size 28 --epochs "${PAN_COMPARE_EPOCHS:-20}"
             -b 32 --lr 0.04 --warmup 1 --lr_type cos --dropout 0.2 --zero_init_residual --no-fc_lr5
             --trim_small_maps --pretrain none --seed 0)
crop=24
scale=28
segments=4

# The table goes into README.md at the end: check now that it can, not after half an hour.
python -c 'from tools.compare_models import replace_marked_block; replace_marked_block(open("README.md", encoding="utf-8").read(), "", "README.md")' || {
    echo "$(basename "$0"): README.md needs its compare-results marker lines (see tools/compare_models.py)" >&2
    exit 1
}
mkdir -p "$out"
exec > >(tee -a "$out/compare.log") 2>&1
start=$SECONDS

echo "=== [$(( SECONDS - start ))s] synthetic dataset in $data"
python tools/make_synthetic.py --output_dir "$data" "${data_flags[@]}" --videos --workers "$(nproc)" --quiet || {
    echo "$(basename "$0"): generating the dataset failed (see above); if $data holds a dataset made with other settings, remove it or set PAN_COMPARE_DATA to another folder" >&2
    exit 1
}

# name, modality, model flags
models=(
    "tsn|RGB|--base TSN --no-shift --no-VAP --consensus_type avg"
    "tsm|RGB|--shift --shift_div 8 --shift_place blockres --no-VAP --consensus_type avg"
    "pa|PA|--shift --shift_div 8 --shift_place blockres --VAP"
    "lite|Lite|--shift --shift_div 8 --shift_place blockres --VAP"
)
for entry in "${models[@]}"; do
    IFS='|' read -r name modality flags <<< "$entry"
    echo "=== [$(( SECONDS - start ))s] training $name ($modality $flags)"
    # shellcheck disable=SC2086  # $flags holds several flags
    python main.py synthetic "$modality" --root_path "$data" "${train_flags[@]}" $flags \
        --device "$device" -j "$workers" --eval-freq 1 --print-freq 10 \
        --root_log "$out/log" --root_model "$out/checkpoints" --store_name "$name" --resume auto
    echo "=== [$(( SECONDS - start ))s] evaluating $name"
    rm -rf "$out/eval/$name"
    python test_models.py synthetic --root_path "$data" --weights "$out/checkpoints/$name/ckpt.best.pth.tar" \
        --test_segments "$segments" --test_crops 1 --input_size "$crop" --scale_size "$scale" --batch_size 8 -j "$workers" \
        --device "$device" --output_dir "$out/eval/$name"
done

echo "=== [$(( SECONDS - start ))s] evaluating PAN Full: the RGB stream (TSM) and the PA stream fused"
rm -rf "$out/eval/full"
python test_models.py synthetic --root_path "$data" \
    --weights "$out/checkpoints/tsm/ckpt.best.pth.tar,$out/checkpoints/pa/ckpt.best.pth.tar" \
    --test_segments "$segments" --test_crops 1 --input_size "$crop" --scale_size "$scale" --batch_size 8 -j "$workers" \
    --device "$device" --output_dir "$out/eval/full"

python tools/compare_models.py --out "$out/results.md" --readme README.md --categories "$data/category.txt" \
    --model "TSN (RGB, avg consensus)=$out/eval/tsn:$out/log/tsn" \
    --model "TSM (RGB + shift)=$out/eval/tsm:$out/log/tsm" \
    --model "PAN PA (PA + shift + VAP)=$out/eval/pa:$out/log/pa" \
    --model "PAN Lite (RGB+PA + shift + VAP)=$out/eval/lite:$out/log/lite" \
    --model "PAN Full (TSM + PAN PA scores summed)=$out/eval/full" \
    --note "resnet18 from scratch, $segments segments, crop $crop, flags: ${train_flags[*]}" \
    --note "validation set of $(wc -l < "$data/val_list.txt") videos; one centre crop, one clip; device $device" \
    --note "measured $(date -u +%Y-%m-%d) on $(nproc) CPU core(s), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
python tools/plot_run.py "$out/log/tsn" "$out/log/tsm" "$out/log/pa" "$out/log/lite" \
    --name "TSN" --name "TSM" --name "PAN PA" --name "PAN Lite" \
    --title "synthetic mirror pairs: resnet18 from scratch, $segments segments" --out "$out/curves.png"
echo "=== [$(( SECONDS - start ))s] done: $out/results.md, $out/curves.png (reports: $out/eval/*/report.html)"
