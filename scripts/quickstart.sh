#!/usr/bin/env bash
# The README's first command. On a fresh machine, with no GPU, no network and no ImageNet
# weights: set up the environment, generate the synthetic dataset (12 classes in 6 mirror
# pairs that differ only in the direction of time), train PAN Lite on it with main.py,
# evaluate the best checkpoint with test_models.py (metrics and report.html), classify one video
# file with the demo, draw PA maps with Grad-CAM and the training curves, and print where
# everything is and the accuracy reached.
#
#   bash scripts/quickstart.sh           # the full run (see docs/QUICKSTART.md for its timing)
#   bash scripts/quickstart.sh --tiny    # a reduced run for the test suite: tiny data, one epoch
#
# Environment (all optional):
#   PAN_QUICKSTART_OUT     folder for every output (default: runs/quickstart; runs/quickstart_tiny with --tiny)
#   PAN_QUICKSTART_DATA    dataset folder (default: data/synthetic; <out>/data with --tiny)
#   PAN_QUICKSTART_EPOCHS  training epochs of the full run (default: 20)
#   PAN_QUICKSTART_MODE    "tiny" is the same as --tiny
#   PAN_QUICKSTART_DEVICE  cpu, cuda or auto (default: auto, i.e. CUDA when there is a GPU)
# Relative paths are taken from the folder the command is run in.
# Running it again resumes an interrupted training (main.py --resume auto) and redoes the rest;
# a finished training is not repeated.
set -eo pipefail
caller_dir="$PWD"
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"

mode="${PAN_QUICKSTART_MODE:-full}"
for arg in "$@"; do
    case "$arg" in
        --tiny) mode=tiny ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "quickstart.sh: unknown argument '$arg' (only --tiny and --help)" >&2; exit 2 ;;
    esac
done

absolute() { case "$1" in /*) echo "$1" ;; *) echo "$caller_dir/$1" ;; esac; }

# The configuration, chosen by measurement on the slower CPU class (2-core AMD EPYC, AVX2 only;
# docs/QUICKSTART.md has the figures). Full: 1200 training and 240 validation videos of 16 frames at
# 32x32; 4 segments of 4 frames, whose snippets cover each video's 16 frames without gaps; crop 24
# of frames resized to 28; resnet18 from scratch with its residual blocks starting as the identity
# (--zero_init_residual: without it the first epochs are spent above chance loss); batch 32 at lr 0.04
# with a 1-epoch warm-up and cosine decay; 20 epochs: about 8 minutes in all on 2 AVX2 cores, top-1 above
# 90%. Without ImageNet weights the classifier's usual 5x learning rate (fc_lr5) makes the first epochs
# diverge, so it is off; --trim_small_maps skips the convolution taps that meet only padding on the
# 1x1-3x3 maps of layer2-4 (exact; most of the step on AVX2 CPUs otherwise). At these sizes channels-last
# does not pay on the CPU (tools/bench_train.py), so it is off.
# Tiny: the same pipeline on 36 videos of 16 frames, 4 segments, one epoch (seconds).
case "$mode" in
    full)
        out="$(absolute "${PAN_QUICKSTART_OUT:-runs/quickstart}")"
        data="$(absolute "${PAN_QUICKSTART_DATA:-data/synthetic}")"
        data_flags=(--size 32 --frames 16 --train-per-class 100 --val-per-class 20)
        train_flags=(--num_segments 4 --crop_size 24 --scale_size 28 --epochs "${PAN_QUICKSTART_EPOCHS:-20}" -b 32
                     --lr 0.04 --warmup 1 --dropout 0.2 --zero_init_residual)
        ;;
    tiny)
        out="$(absolute "${PAN_QUICKSTART_OUT:-runs/quickstart_tiny}")"
        data="$(absolute "${PAN_QUICKSTART_DATA:-$out/data}")"
        data_flags=(--size 32 --frames 16 --train-per-class 2 --val-per-class 1)
        train_flags=(--num_segments 4 --crop_size 28 --scale_size 32 --epochs 1 -b 8 --lr 0.005 --warmup 0
                     --dropout 0.2)
        ;;
    *) echo "quickstart.sh: PAN_QUICKSTART_MODE must be 'full' or 'tiny', not '$mode'" >&2; exit 2 ;;
esac
device="${PAN_QUICKSTART_DEVICE:-auto}"
source "$(dirname "${BASH_SOURCE[0]}")/loader_workers.sh"
workers=$(loader_workers "$device")
run=pan_lite
ckpt="$out/checkpoints/$run/ckpt.best.pth.tar"
mkdir -p "$out"
exec > >(tee -a "$out/quickstart.log") 2>&1

start=$SECONDS
declare -A took
step() { current="$1"; step_start=$SECONDS; echo; echo "=== [$(( SECONDS - start ))s] $2"; }
done_step() { took[$current]=$(( SECONDS - step_start )); }

step data "synthetic dataset in $data ($mode)"
python tools/make_synthetic.py --output_dir "$data" "${data_flags[@]}" --videos --workers "$(nproc)" --quiet || {
    echo "$(basename "$0"): generating the dataset failed (see above); if $data holds a dataset made with other settings, remove it or set PAN_QUICKSTART_DATA to another folder" >&2
    exit 1
}
done_step

step train "training PAN Lite (resnet18 from scratch, TSM shift, VAP) on $device"
python main.py synthetic Lite --root_path "$data" --arch resnet18 "${train_flags[@]}" \
    --lr_type cos --no-fc_lr5 --trim_small_maps --shift --shift_div 8 --shift_place blockres --VAP --pretrain none \
    --seed 0 --device "$device" -j "$workers" --eval-freq 1 --print-freq 10 \
    --root_log "$out/log" --root_model "$out/checkpoints" --store_name "$run" --resume auto
done_step

read -r crop segments scale < <(python -c 'import json, sys; a = json.load(open(sys.argv[1]))
print(a["crop_size"], a["num_segments"], a["scale_size"])' "$out/log/$run/args.json")
step evaluate "evaluating the best checkpoint on the validation list"
rm -rf "$out/eval"
python test_models.py synthetic --root_path "$data" --weights "$ckpt" --test_segments "$segments" \
    --test_crops 1 --input_size "$crop" --scale_size "$scale" --batch_size 8 -j "$workers" --device "$device" --output_dir "$out/eval"
done_step

# The first validation video, as an mp4 file: the demo reads any container PyAV decodes.
read -r video _ label < "$data/val_videolist.txt"
true_class=$(sed -n "$(( label + 1 ))p" "$data/category.txt")
step demo "demo on $video (true class: $true_class)"
python tools/demo.py "$data/$video" --weights "$ckpt" --categories "$data/category.txt" --device "$device" \
    | tee "$out/demo.txt"
done_step

step pictures "PA maps and Grad-CAM of $video (untrained PA beside the trained one); training curves"
python tools/visualize_pa.py "$data/$video" --weights "$ckpt" --categories "$data/category.txt" --out "$out/pa_maps.png"
python tools/plot_run.py "$out/log/$run" --name "PAN Lite" --out "$out/curves.png"
done_step

total=$(( SECONDS - start ))
python - "$out" "$run" "$ckpt" "$data" "$mode" "$total" \
    "${took[data]}" "${took[train]}" "${took[evaluate]}" "${took[demo]}" "${took[pictures]}" <<'EOF'
import json, os, sys

out, run, ckpt, data, mode, total = sys.argv[1:7]
seconds = dict(zip(("data", "train", "evaluate", "demo", "pictures"), map(int, sys.argv[7:12])))
with open(os.path.join(out, "eval", "metrics.json"), encoding="utf-8") as f:
    metrics = json.load(f)
minutes = lambda s: f"{int(s) // 60}m{int(s) % 60:02d}s"
summary = {"mode": mode, "top1": metrics["top1"], "top5": metrics["top5"], "num_videos": metrics["num_videos"],
           "seconds": {**seconds, "total": int(total)}, "checkpoint": ckpt, "data": data}
lines = [
    f"PAN Lite on the synthetic validation set: top-1 {metrics['top1']:.2f}%, top-5 {metrics['top5']:.2f}% "
    f"({metrics['num_videos']} videos); quickstart took {minutes(total)}",
    f"  dataset      {data}",
    f"  training log {os.path.join(out, 'log', run, 'log.txt')} (arguments in args.json, epochs in metrics.jsonl)",
    f"  TensorBoard  tensorboard --logdir {os.path.join(out, 'log')}",
    f"  checkpoint   {ckpt}",
    f"  evaluation   {os.path.join(out, 'eval')} (metrics.json, scores.npz, confusion_matrix.csv, per_class.csv)",
    f"  report       {os.path.join(out, 'eval', 'report.html')} (open in a browser; confusion.png beside it)",
    f"  curves       {os.path.join(out, 'curves.png')} (loss, top-1/top-5, learning rate per epoch)",
    f"  demo output  {os.path.join(out, 'demo.txt')}",
    f"  PA pictures  {os.path.join(out, 'pa_maps.png')} (with Grad-CAM)",
    "  step times   " + " | ".join(f"{k} {minutes(v)}" for k, v in seconds.items()),
]
if mode == "full":
    verdict = "met" if metrics["top1"] >= 90 and int(total) <= 600 else "NOT met"
    lines.append(f"  target       top-1 >= 90% within 10 minutes: {verdict}")
text = "\n".join(lines) + "\n"
for name, content in (("summary.txt", text), ("summary.json", json.dumps(summary, indent=2) + "\n")):
    tmp = os.path.join(out, f".{name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, os.path.join(out, name))
print("\n" + text, end="")
EOF
