#!/usr/bin/env bash
# Streaming PAN end to end on the CPU: train (or reuse) a small one-way PAN PA model (--shift_mode online,
# --train_history) on the synthetic dataset, build a long synthetic video in which the action changes every few
# seconds (with its ground-truth timeline), stream it with tools/stream.py, and report the share of steps that
# name the right action once the window has left the previous action (after each change's warm-up of T
# segments), plus the timing summary. docs/DEPLOY.md has the measured figures.
#
#   bash scripts/stream_demo.sh             # the full run (4 minutes on 2 AVX-512 cores: docs/DEPLOY.md)
#   bash scripts/stream_demo.sh --reduced   # a reduced run for the test suite: tiny data, one epoch, short video
#
# Environment (all optional):
#   PAN_STREAM_DEMO_OUT     folder for every output (default: runs/stream_demo; runs/stream_demo_reduced)
#   PAN_STREAM_DEMO_EPOCHS  training epochs of the full run (default: 20, as the quickstart)
# Running it again reuses the dataset and a finished training (main.py --resume auto).
set -eo pipefail
caller_dir="$PWD"
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"

mode=full
for arg in "$@"; do
    case "$arg" in
        --reduced) mode=reduced ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "stream_demo.sh: unknown argument '$arg' (only --reduced and --help)" >&2; exit 2 ;;
    esac
done
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$caller_dir/$1" ;; esac; }

# Full: the quickstart's data and training schedule (32x32 frames, 16 per video, 4 segments of 4 frames that
# tile them, crop 24, resnet18 from scratch, zero-initialised residual blocks, batch 32, lr 0.04, VAP) for the
# PA modality (PA maps only: on these mirror pairs it learns the direction that Lite's RGB input lets it skip,
# docs/DEPLOY.md), with a one-way shift trained with history (each batch shifted as one stream, as it will
# stream); the long video holds 48 actions (each of the 12 classes 4 times, in shuffled
# rounds, never the same class twice in a row), one fresh 16-frame scene each (1.3 s at 12 fps). One scene per
# action because a synthetic action is an event that spans its whole clip: two scenes of one action back to back
# put a scene cut inside the window that no training clip has (docs/DEPLOY.md has the measurement).
# Reduced: 4 segments, one epoch, 4 actions: seconds, for the tests.
case "$mode" in
    full)
        out="$(absolute "${PAN_STREAM_DEMO_OUT:-runs/stream_demo}")"
        data_flags=(--size 32 --frames 16 --train-per-class 100 --val-per-class 5)
        train_flags=(--num_segments 4 --crop_size 24 --scale_size 28 --epochs "${PAN_STREAM_DEMO_EPOCHS:-20}" -b 32
                     --lr 0.04 --warmup 1 --zero_init_residual)
        actions=48; clips_per_action=1
        ;;
    reduced)
        out="$(absolute "${PAN_STREAM_DEMO_OUT:-runs/stream_demo_reduced}")"
        data_flags=(--size 32 --frames 16 --train-per-class 2 --val-per-class 1)
        train_flags=(--num_segments 4 --crop_size 28 --scale_size 32 --epochs 1 -b 8 --lr 0.005 --warmup 0)
        actions=4; clips_per_action=1
        ;;
esac
data="$out/data"
run=pan_pa_online
ckpt="$out/checkpoints/$run/ckpt.best.pth.tar"
workers=0  # on the CPU the loader runs in the training process, as in the quickstart (scripts/quickstart.sh)
mkdir -p "$out"
start=$SECONDS

echo "=== [$(( SECONDS - start ))s] synthetic dataset in $data ($mode)"
python tools/make_synthetic.py --output_dir "$data" "${data_flags[@]}" --workers "$(nproc)" --quiet

echo "=== [$(( SECONDS - start ))s] training PAN PA with a one-way shift and history (resnet18 from scratch, VAP)"
python main.py synthetic PA --root_path "$data" --arch resnet18 "${train_flags[@]}" --dropout 0.2 --lr_type cos --no-fc_lr5 --trim_small_maps --shift --shift_mode online --train_history --VAP --pretrain none \
    --seed 0 --device cpu -j "$workers" --eval-freq 100 --print-freq 50 \
    --root_log "$out/log" --root_model "$out/checkpoints" --store_name "$run" --resume auto
train_s=$(( SECONDS - start ))

frames=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["num_frames"])' "$data/dataset.json")
echo "=== [$(( SECONDS - start ))s] the long video: $actions actions, $clips_per_action clip(s) of $frames frames each"
python - "$out" "$actions" "$clips_per_action" "$frames" <<'EOF'
import json, os, sys
import numpy as np
from tools.make_synthetic import CLASS_NAMES, VIDEO_FPS, render_video, video_rng, write_mp4

out, actions, per, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(7)
order = []
while len(order) < actions:  # shuffled rounds of every class; a round never starts with the class just shown
    round_ = list(rng.permutation(len(CLASS_NAMES)))
    if order and round_[0] == order[-1]:
        round_ = round_[1:] + round_[:1]
    order += round_
order = order[:actions]
clips, timeline, frame = [], [], 0
for i, label in enumerate(order):
    for k in range(per):  # fresh scenes (test split seeds, never trained on)
        clips.append(render_video(int(label), video_rng(1000 + i, "val", k), 32, length))
    timeline.append({"label": int(label), "name": CLASS_NAMES[label], "first_frame": frame + 1,
                     "last_frame": frame + length * per, "start_s": frame / VIDEO_FPS})
    frame += length * per
write_mp4(os.path.join(out, "long.mp4"), np.concatenate(clips), VIDEO_FPS)
with open(os.path.join(out, "long_timeline.json"), "w") as f:
    json.dump({"fps": VIDEO_FPS, "frames": frame, "actions": timeline}, f, indent=1)
print(f"{out}/long.mp4: {frame} frames ({frame / VIDEO_FPS:.1f} s at {VIDEO_FPS} fps), the action changes every "
      f"{length * per / VIDEO_FPS:.1f} s")
EOF

echo "=== [$(( SECONDS - start ))s] streaming it"
rm -rf "$out/stream"
python tools/stream.py --weights "$ckpt" --source "$out/long.mp4" --categories "$data/category.txt" \
    --output_dir "$out/stream" --threads "$(nproc)" | tee "$out/stream.txt"

total=$(( SECONDS - start ))
python - "$out" "$mode" "$total" "$train_s" <<'EOF'
import csv, json, os, sys

out, mode, total, train_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
truth = json.load(open(os.path.join(out, "long_timeline.json")))
summary = json.load(open(os.path.join(out, "stream", "summary.json")))
window = summary["segments_per_window"] * summary["frames_per_segment"]
def action(frame):
    return next(i for i, a in enumerate(truth["actions"]) if a["first_frame"] <= frame <= a["last_frame"])
rows = list(csv.DictReader(open(os.path.join(out, "stream", "timeline.csv"))))
scored = [r for r in rows if int(r["frame"]) >= window and action(int(r["frame"]) - window + 1) == action(int(r["frame"]))]
right = sum(int(r["top1"]) == truth["actions"][action(int(r["frame"]))]["label"] for r in scored)
share = right / len(scored) if scored else 0.0
lat = summary["step_latency_ms"]
result = {"mode": mode, "steps": len(rows), "scored_steps": len(scored), "right": right, "share": share,
          "window_frames": window, "step_latency_ms": lat, "processed_fps": summary["processed_fps"],
          "frames_dropped": summary["frames_dropped"], "total_s": total, "train_s": train_s}
json.dump(result, open(os.path.join(out, "demo_result.json"), "w"), indent=2)
print(f"right action in {right}/{len(scored)} steps after each change's warm-up ({100 * share:.1f}%; goal >= 90%) "
      f"of {len(rows)} steps; per-step latency p50/p90/p99 {lat['p50']:.1f}/{lat['p90']:.1f}/{lat['p99']:.1f} ms, "
      f"{summary['processed_fps']:.0f} fps, {summary['frames_dropped']} frames dropped; the demo took {total} s "
      f"(training included: {train_s} s)")
print(f"outputs: {out}/stream/stream.mp4, timeline.csv, summary.json; truth: {out}/long_timeline.json")
EOF
