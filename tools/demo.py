"""Classify one video with a trained PAN checkpoint, and show where the time goes.

The input is a video file (any container PyAV decodes: mp4, webm, avi...) or a
folder of frames named like the dataset's (``img_00001.jpg``...). The clip is
sampled as at validation time (the centre frame run of each of ``T`` equal
spans, ``m`` consecutive frames per span for PA and Lite), preprocessed with
the evaluation transform of ``test_models.py``, and classified; the top-5
classes are printed with their names and probabilities, with the time of each
stage: decode, preprocessing, PA + network.

    python tools/demo.py data/synthetic/videos/video_001200.mp4 \\
        --weights runs/quickstart/checkpoints/pan_lite/ckpt.best.pth.tar
    python tools/demo.py data/synthetic/frames/video_001200 --weights ... \\
        --categories data/synthetic/category.txt --device cuda --amp --channels_last

The checkpoint is read with ``weights_only=True`` (a file that would run code
while loading is refused) and must have as many classes as the category file
has names.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops import frame_sampling  # noqa: E402
from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.dataset import SampleLoadError, frame_numbers  # noqa: E402
from ops.dataset_config import get_dataset_config, load_categories  # noqa: E402
from ops.errors import PanError  # noqa: E402
from ops.exported import is_exported, load_evaluation_model  # noqa: E402
from ops.frame_sources import FolderSource, FrameSource, FrameSourceError, open_source  # noqa: E402
from ops.inference import FAST_PATHS, InferenceOptions, prepare_model, resolve_fast_path, run_batch  # noqa: E402
from ops.models import PAN  # noqa: E402
from ops.runtime import DEVICE_CHOICES, resolve_device, setup_logging  # noqa: E402
from ops.transforms import default_scale_size, eval_transform  # noqa: E402

logger = logging.getLogger("demo")

#: Frame-file template of every registered dataset but the Something-Something ones.
DEFAULT_IMAGE_TMPL = "img_{:05d}.jpg"
#: Crop of the released models, used when a checkpoint does not record its input size.
DEFAULT_CROP = 224
#: Keys under which a training run's saved arguments may record its crop size.
CROP_KEYS = ("input_size", "crop_size")
SCALE_KEYS = ("scale_size",)


class DemoError(PanError, ValueError):
    """Input that the demo cannot use; the message names the file or the flag."""


# --------------------------------------------------------------------------- input


def count_folder_frames(folder: str, image_tmpl: str) -> int:
    """Number of frames ``1..n`` present in a frame folder (numbered from 1 without gaps).

    Raises:
        DemoError: the folder has no frame named like ``image_tmpl.format(1)``.
    """
    return _frame_count(FolderSource(folder, image_tmpl))


def input_source(path: str, image_tmpl: str) -> FrameSource:
    """The frames ``path`` names: a frame folder, a video file (any container PyAV decodes, whatever
    its extension) or ``<store>/<video>`` in an LMDB frame store (:func:`ops.frame_sources.open_source`)."""
    try:
        return open_source(path, image_tmpl, video_extensions=None)
    except FrameSourceError as e:
        raise DemoError(str(e)) from None


def _frame_count(source: FrameSource, decode: bool = False) -> int:
    try:
        n = source.count(decode=decode)
    except SampleLoadError as e:
        raise DemoError(str(e)) from None
    if n < 1:
        raise DemoError(f"{source.path}: the video has no decodable frames")
    return n


def input_frame_count(path: str, image_tmpl: str, decode: bool = False) -> int:
    """Frames of a video file (container count, or decoded when ``decode``) or a frame folder."""
    return _frame_count(input_source(path, image_tmpl), decode)


def read_input_frames(path: str, numbers: Sequence[int], image_tmpl: str) -> list[np.ndarray]:
    """Decoded RGB frames (``uint8 [H, W, 3]``) numbered ``numbers`` (1-based) of a video or folder."""
    return input_source(path, image_tmpl).read_rgb(numbers)


def sample_frame_numbers(num_frames: int, num_segments: int, new_length: int, num_clips: int = 1) -> np.ndarray:
    """1-based frames of the test-time sampling: ``num_clips`` views of ``num_segments`` x ``new_length``.

    Returns: int64 ``[num_clips * num_segments * new_length]``, view-major.
    """
    offsets = frame_sampling.test_offsets(num_frames, num_segments, new_length, num_clips=num_clips)
    return frame_numbers(offsets, num_frames, new_length)


@dataclass
class DecodedClip:
    """The sampled frames of one input and where they came from."""

    path: str
    num_frames: int
    numbers: np.ndarray
    frames: list[np.ndarray]


def decode_clip(path: str, num_segments: int, new_length: int, num_clips: int, image_tmpl: str) -> DecodedClip:
    """Count the input's frames, sample them as at test time and decode them.

    A video container may state a frame count that decoding does not reach
    (some muxers round it); then the frames are counted by decoding and the
    sampling is redone, with a warning.
    """
    source = input_source(path, image_tmpl)
    num_frames = _frame_count(source)
    numbers = sample_frame_numbers(num_frames, num_segments, new_length, num_clips)
    try:
        frames = source.read_rgb(numbers)
    except SampleLoadError as e:
        counted = _frame_count(source, decode=True)  # a folder's count stays the same: the error stands
        if counted >= num_frames:
            raise
        logger.warning("%s: the container says %d frames but %d decode (%s); sampling those",
                       path, num_frames, counted, e.reason)
        num_frames = counted
        numbers = sample_frame_numbers(num_frames, num_segments, new_length, num_clips)
        frames = source.read_rgb(numbers)
    return DecodedClip(path, num_frames, numbers, frames)


# --------------------------------------------------------------------------- checkpoint


def _saved_args(checkpoint: dict) -> dict[str, Any]:
    saved = checkpoint.get("args")
    return saved if isinstance(saved, dict) else {}


def input_size_of(checkpoint: dict, crop_flag: int | None, scale_flag: int | None) -> tuple[int, int, str]:
    """``(crop, scale, source)``: the flags, else the training run's saved arguments, else 224/256."""
    saved = _saved_args(checkpoint)
    crop, source = crop_flag, "flag"
    if crop is None:
        crop = next((int(saved[k]) for k in CROP_KEYS if saved.get(k)), None)
        source = "checkpoint"
    if crop is None:
        crop, source = DEFAULT_CROP, "default of the released models"
    scale = scale_flag
    if scale is None and source == "checkpoint":
        scale = next((int(saved[k]) for k in SCALE_KEYS if saved.get(k)), None)
    return crop, scale or default_scale_size(crop), source


def category_file_for(checkpoint: dict, categories: str | None, dataset: str | None, root_path: str | None) -> str:
    """The category file: ``--categories``, else that of ``--dataset`` or of the checkpoint's training dataset."""
    if categories:
        return categories
    saved = _saved_args(checkpoint)
    name = dataset or saved.get("dataset")
    if not name:
        raise DemoError("the checkpoint does not say which dataset it was trained on: pass --categories or --dataset")
    # The training run's data root belongs to the training dataset only.
    root = root_path or (saved.get("root_path") if name == saved.get("dataset") else None)
    try:
        cfg = get_dataset_config(name, root)
    except ValueError as e:
        raise DemoError(f"cannot find the category file of dataset {name!r}: {e}; pass --categories") from None
    if not cfg.category_file:
        raise DemoError(f"dataset {name!r} has no category file; pass --categories")
    return cfg.category_file


def check_categories(model: PAN, class_names: list[str], weights: str, category_file: str) -> None:
    """Refuse a checkpoint whose class count differs from the category file's."""
    if model.num_class != len(class_names):
        raise DemoError(
            f"checkpoint {weights} has {model.num_class} classes but category file {category_file} lists "
            f"{len(class_names)}: they belong to different datasets (pass the right --categories)"
        )


# --------------------------------------------------------------------------- classification


@dataclass
class DemoResult:
    """What the demo found: the ``top`` classes and the seconds spent in each stage."""

    top: list[tuple[int, str, float]]
    probabilities: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    num_frames: int = 0
    views: int = 1


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def classify(
    model: PAN,
    path: str,
    class_names: list[str],
    device: torch.device,
    options: InferenceOptions,
    crop_size: int,
    scale_size: int,
    test_crops: int = 1,
    num_clips: int = 1,
    image_tmpl: str = DEFAULT_IMAGE_TMPL,
    top_k: int = 5,
    repeat: int = 1,
) -> DemoResult:
    """Classify the video or frame folder ``path`` with a prepared ``model`` (see ``prepare_model``).

    The ``test_crops * num_clips`` views are scored in one batch and their
    softmax probabilities averaged. With ``repeat > 1`` the model stage is run
    once more to warm up and then ``repeat`` times; its time is the median.
    """
    clip, t_decode = _timed(
        lambda: decode_clip(path, model.num_segments, model.new_length, num_clips, image_tmpl), device
    )
    transform = eval_transform(crop_size, scale_size, test_crops, False, model.input_mean, model.input_std)
    # [V_crop * V_clip*T*m * 3, S, S] -> [V_crop * V_clip, T*m*3, S, S]: each view is one clip of T segments.
    x, t_pre = _timed(lambda: transform(clip.frames, None), device)
    per_view = model.num_segments * model.new_length * 3
    x = x.reshape(-1, per_view, crop_size, crop_size)

    runs = []
    for _ in range(repeat + (1 if repeat > 1 else 0)):
        logits, seconds = _timed(lambda: run_batch(model, x, device, options), device)
        runs.append(seconds)
    t_model = statistics.median(runs[1:] if repeat > 1 else runs)

    probs = torch.softmax(logits.float(), dim=1).mean(dim=0).numpy()
    order = np.argsort(-probs, kind="stable")[:top_k]
    top = [(int(i), class_names[int(i)], float(probs[i])) for i in order]
    timings = {"decode": t_decode, "preprocessing": t_pre, "PA + network": t_model}
    return DemoResult(top, probs, timings, clip.num_frames, x.shape[0])


def format_result(result: DemoResult) -> str:
    """The top classes and the stage times as printed by the demo."""
    width = max(len(name) for _, name, _ in result.top)
    lines = [f"top-{len(result.top)}:"]
    lines += [f"  {rank}. {name:<{width}}  {100 * p:6.2f}%" for rank, (_, name, p) in enumerate(result.top, 1)]
    total = sum(result.timings.values())
    stages = " | ".join(f"{stage} {1000 * s:.1f}" for stage, s in result.timings.items())
    lines.append(f"time per stage (ms): {stages} | total {1000 * total:.1f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Classify one video file or frame folder with a PAN checkpoint and time each stage.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("input", help="a video file (any format PyAV reads) or a folder of frames")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth.tar) from main.py or a released file")
    parser.add_argument("--categories", default=None,
                        help="class names, one per line (default: the category file of --dataset, or of the "
                             "dataset the checkpoint was trained on)")
    parser.add_argument("--dataset", default=None,
                        help="dataset whose category file and frame names to use (default: the checkpoint's)")
    parser.add_argument("--root_path", default=None,
                        help="root of that dataset (default: the checkpoint's, else the dataset registry's)")
    parser.add_argument("--image_tmpl", default=None,
                        help="frame file names in a frame folder (default: the dataset's, else img_{:05d}.jpg)")
    parser.add_argument("--input_size", type=int, default=None,
                        help="crop size fed to the network (default: the checkpoint's training crop, else 224)")
    parser.add_argument("--scale_size", type=int, default=None,
                        help="shorter side before cropping (default: the checkpoint's, else input_size*256/224)")
    parser.add_argument("--test_crops", type=int, default=1, choices=(1, 3, 5, 10),
                        help="spatial crops averaged (default: 1, the centre crop)")
    parser.add_argument("--num_clips", type=int, default=1,
                        help="temporal clips averaged, evenly shifted (default: 1)")
    parser.add_argument("--top", type=int, default=5, help="number of classes printed (default: 5)")
    parser.add_argument("--device", default="cpu",
                        help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (default: cpu, which every machine has)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                        help="autocast: bf16 on CPU (fast only with AVX512-BF16/AMX), fp16 on CUDA (default: off)")
    parser.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=False,
                        help="NHWC memory format, faster convolutions on most CPUs and tensor cores (default: off)")
    parser.add_argument("--fuse_bn", action=argparse.BooleanOptionalAction, default=False,
                        help="fold BatchNorm into the convolutions before it (default: off)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="torch.compile the model; pays off only with --repeats (default: off)")
    parser.add_argument("--fast", default=None, choices=FAST_PATHS,
                        help="a whole fast path instead of --amp/--channels_last/--fuse_bn/--compile: auto (the "
                             "best for this machine, logged with the reason), bf16, int8 (backbone quantized, "
                             "calibrated on the input clip; CPU), fp32 (default: off)")
    parser.add_argument("--repeats", dest="repeat", type=int, default=1,
                        help="time the network this many times after a warm-up run and report the median "
                             "(default: 1, a single cold run)")
    return add_aliases(parser, {"--repeat": "--repeats"})


def _dataset_image_tmpl(checkpoint: dict, dataset: str | None) -> str:
    """The frame template of ``--dataset`` or the checkpoint's dataset, else the common default."""
    saved = _saved_args(checkpoint)
    if saved.get("image_tmpl"):
        return str(saved["image_tmpl"])
    name = dataset or saved.get("dataset")
    if name:
        try:
            return get_dataset_config(name, saved.get("root_path") or ".").image_tmpl
        except ValueError:
            pass  # a custom dataset: the common template below, which count_folder_frames checks
    return DEFAULT_IMAGE_TMPL


def main(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status (2 for unusable input, with the reason logged)."""
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as e:
        logger.error("%s", e)
        return 2
    try:
        if args.repeat < 1 or args.num_clips < 1 or args.top < 1:
            raise DemoError("--repeats, --num_clips and --top must be >= 1")
        exported = is_exported(args.weights)
        if exported and (args.amp or args.channels_last or args.fuse_bn or args.compile or args.fast):
            raise DemoError(f"{args.weights} is an exported model and runs as it was exported: drop --amp, "
                            "--channels_last, --fuse_bn, --compile and --fast (they apply to checkpoints)")
        options = resolve_fast_path(args.fast, device, InferenceOptions(
            amp=args.amp, channels_last=args.channels_last, fuse_bn=args.fuse_bn, compile=args.compile))
        start = time.perf_counter()
        model, resolved, checkpoint = load_evaluation_model(args.weights, None)
        t_load = time.perf_counter() - start
        if exported and model.class_names and not (args.categories or args.dataset):
            category_file, class_names = f"{args.weights} (its class names)", list(model.class_names)
        else:
            category_file = category_file_for(checkpoint, args.categories, args.dataset, args.root_path)
            class_names = load_categories(category_file)
        check_categories(model, class_names, args.weights, category_file)
        crop, scale, size_source = input_size_of(checkpoint, args.input_size, args.scale_size)
        image_tmpl = args.image_tmpl or _dataset_image_tmpl(checkpoint, args.dataset)
        prepared = prepare_model(model, device, options)
        result = classify(prepared, args.input, class_names, device, options, crop, scale,
                          args.test_crops, args.num_clips, image_tmpl, min(args.top, len(class_names)),
                          args.repeat)
    except PanError as e:  # the input's fault: one sentence; anything else is a bug and keeps its traceback
        logger.error("%s", e)
        return 2
    cfg = resolved.config
    print(f"input: {args.input} ({result.num_frames} frames; {model.num_segments} segments x "
          f"{model.new_length} frames, {result.views} view(s) of {crop}x{crop}, crop from {size_source})")
    print(f"model: PAN {cfg['modality']} {cfg['base_model']}, {model.num_class} classes ({category_file}); "
          f"{device}, {'exported' if exported else options.describe()}; weights read in {1000 * t_load:.0f} ms")
    print(format_result(result))
    return 0


if __name__ == "__main__":
    setup_logging(True)
    sys.exit(main(get_args_parser().parse_args()))
