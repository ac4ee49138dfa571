"""Draw PA (Persistence of Appearance) maps beside the frames they come from, and where the model
looks (Grad-CAM), as a PNG grid.

One row per segment: the ``m`` consecutive RGB frames that PA reads, then the
``m - 1`` PA maps (one per neighbouring pair of frames), then, with
``--weights``, the Grad-CAM overlay of the segment's first frame. Each PA map
is normalised on its own for display (its 99.5th percentile becomes full
brightness) and drawn with matplotlib's ``inferno`` scale, so even the weak
maps of an untrained PA are visible: PA is a small convolution applied to the
difference of two frames, then a per-pixel norm, so it lights up where
appearance changes between frames -- the boundaries of moving things -- and
stays dark on static background.

Grad-CAM (Selvaraju et al., 2017) weights the activations of the backbone's
last stage (``layer4``) by the mean gradient of a class score, per segment:
red where the evidence for that class lies, for the predicted class or the one
given with ``--gradcam_class``. It works for Lite, RGB and PA checkpoints
(an RGB model is fed the first frame of each segment); the model runs on the
frames at their own size, so the overlay lines up with the frames shown (on
frames of 32 pixels the last stage of a ResNet is 1x1, so the map then only
ranks the segments; at 224 it is 7x7). It needs the checkpoint's own segment
count (the default of ``--num_segments`` then).

    python tools/visualize_pa.py data/synthetic/videos/video_001200.mp4 --out pa.png
    python tools/visualize_pa.py data/synthetic/frames/video_001200 \\
        --weights runs/quickstart/checkpoints/pan_lite/ckpt.best.pth.tar --out pa_trained.png

The maps of a fresh PA, initialised as in training (``N(0, 0.001)`` weights,
seeded by ``--seed``), are always drawn (unless ``--no-untrained``); with
``--weights`` those of a trained PA or Lite checkpoint are drawn beside them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.dataset import SampleLoadError  # noqa: E402
from ops.dataset_config import load_categories  # noqa: E402
from ops.inference import load_checkpoint_model  # noqa: E402
from ops.modalities import DEFAULT_PA_LENGTH  # noqa: E402
from ops.PAN_modules import PA  # noqa: E402
from ops.pictures import (  # noqa: E402
    compute_pa_maps,
    frames_to_tensor,
    grad_cam,
    overlay_cams,
    render_grid,
    save_png_atomic,
)
from ops.runtime import setup_logging  # noqa: E402
from ops.video_reader import VideoReadError  # noqa: E402
from ops.weights import CheckpointError  # noqa: E402
from tools.demo import DEFAULT_IMAGE_TMPL, DemoError, decode_clip  # noqa: E402

logger = logging.getLogger("visualize_pa")


def fresh_pa(data_length: int, seed: int) -> PA:
    """A PA initialised as in training (``N(0, 0.001)`` weights), reproducibly from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PA(data_length).eval()


def trained_pa(weights: str) -> tuple[PA, str]:
    """The PA of a PA or Lite checkpoint and a name for it; an RGB checkpoint is refused."""
    model, resolved, _ = load_checkpoint_model(weights)
    return _pa_of(model, resolved.config["modality"], weights)


def _pa_of(model: torch.nn.Module, modality: str, weights: str) -> tuple[PA, str]:
    if not hasattr(model, "PA"):
        raise DemoError(f"checkpoint {weights} is a {modality} model: it has no PA to draw")
    return model.PA.eval(), f"trained PA: {os.path.basename(weights)} ({modality})"


def cam_overlays(model: torch.nn.Module, frames: list[np.ndarray], m: int, target: int | None,
                 names: list[str] | None) -> tuple[str, np.ndarray]:
    """``(column name, uint8 [S, H, W, 3])``: Grad-CAM of the model on the clip (``S * m`` frames), drawn over
    each segment's first frame."""
    segments = len(frames) // m
    if model.new_length == 1:  # RGB: the first frame of each segment
        chosen = [frames[s * m] for s in range(segments)]
    else:
        chosen = list(frames)
    x = frames_to_tensor(chosen, model.input_mean, model.input_std).reshape(-1, *chosen[0].shape[:2])
    cam = grad_cam(model, x, target)

    def name(c: int) -> str:
        return f"{c} ({names[c]})" if names and c < len(names) else str(c)

    verdict = "the predicted class" if cam.target == cam.predicted else f"predicted: {name(cam.predicted)}"
    overlays = overlay_cams([frames[s * m] for s in range(segments)], cam.maps)
    return f"Grad-CAM of class {name(cam.target)} ({verdict})", overlays


def visualize(
    path: str,
    out: str,
    weights: str | None = None,
    segments: int | None = None,
    data_length: int = DEFAULT_PA_LENGTH,
    seed: int = 0,
    scale: int | None = None,
    image_tmpl: str = DEFAULT_IMAGE_TMPL,
    untrained: bool = True,
    gradcam: bool | None = None,
    gradcam_class: int | None = None,
    categories: str | None = None,
) -> Image.Image:
    """Write the PNG grid of ``segments`` segments of the video or frame folder ``path`` to ``out``.

    The maps of a fresh PA (``untrained``) and of the checkpoint's PA (``weights``) are drawn side
    by side; at least one of them is needed. ``scale`` (default: enough to make tiles at least 96
    pixels high) enlarges every tile. With ``weights``, the Grad-CAM column is added (``gradcam``
    None: when ``segments`` is the checkpoint's segment count, the default; True: required;
    False: never) for ``gradcam_class`` (default: the predicted class; ``categories`` names
    the classes). ``segments`` defaults to the checkpoint's count, else 4. Returns the picture written.
    """
    pas: list[tuple[str, PA]] = []
    model = None
    if weights is not None:
        model, resolved, _ = load_checkpoint_model(weights)
        model.eval()
        if hasattr(model, "PA"):
            pa, name = _pa_of(model, resolved.config["modality"], weights)
            pas.append((name, pa))
            data_length = pa.n_length
    segments = segments or (model.num_segments if model is not None else 4)
    if untrained:
        pas.insert(0, (f"untrained PA (N(0, 0.001), seed {seed})", fresh_pa(data_length, seed)))
    if not pas:
        raise DemoError("nothing to draw: give --weights of a PA or Lite model or keep --untrained "
                        "(an RGB model has no PA)")
    draw_cam = gradcam is not False and model is not None
    if draw_cam and segments != model.num_segments:
        message = (f"Grad-CAM needs the checkpoint's {model.num_segments} segments, not --num_segments {segments} "
                   f"(leave --num_segments out)")
        if gradcam:
            raise DemoError(message)
        logger.info("no Grad-CAM column: %s", message)
        draw_cam = False
    elif gradcam and model is None:
        raise DemoError("Grad-CAM needs --weights")
    clip = decode_clip(path, segments, data_length, 1, image_tmpl)
    groups = [(name, compute_pa_maps(pa, clip.frames)) for name, pa in pas]
    cams = None
    if draw_cam:
        names = load_categories(categories) if categories else None
        cams = cam_overlays(model, clip.frames, data_length, gradcam_class, names)
    height = clip.frames[0].shape[0]
    scale = scale or max(1, -(-96 // height))
    # The file's name, not its folder: a picture is shared, and the folder is only this machine's.
    title = (f"{os.path.basename(os.path.normpath(path))}: {segments} segments of {data_length} frames; "
             "each PA map scaled to its own range")
    if cams:  # the column is one tile wide: its full name goes into the title
        title, cams = f"{title}; {cams[0]}", ("Grad-CAM", cams[1])
    image = render_grid(clip.frames, groups, [int(n) for n in clip.numbers], scale, title, cams)
    save_png_atomic(image, out)
    return image


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write a PNG grid of video frames and their PA maps.", formatter_class=HelpFormatter)
    parser.add_argument("input", help="a video file (any format PyAV reads) or a folder of frames")
    parser.add_argument("--out", required=True, help="PNG file to write (its folder is created)")
    parser.add_argument("--weights", default=None,
                        help="PA or Lite checkpoint whose trained PA to draw (default: none, only a fresh PA)")
    parser.add_argument("--untrained", action=argparse.BooleanOptionalAction, default=True,
                        help="also draw the maps of a fresh, untrained PA (default: on)")
    parser.add_argument("--num_segments", dest="segments", type=int, default=None,
                        help="rows of the grid, evenly spread (default: the checkpoint's segments, else 4)")
    parser.add_argument("--data_length", type=int, default=DEFAULT_PA_LENGTH,
                        help="frames per segment m of a fresh PA (default: 4, as in the paper); "
                             "a checkpoint's own value wins")
    parser.add_argument("--seed", type=int, default=0, help="seed of a fresh PA's weights (default: 0)")
    parser.add_argument("--scale", type=int, default=None,
                        help="integer enlargement of the tiles (default: tiles at least 96 pixels high)")
    parser.add_argument("--gradcam", action=argparse.BooleanOptionalAction, default=None,
                        help="with --weights: draw the Grad-CAM column (default: when --num_segments is the "
                             "checkpoint's own)")
    parser.add_argument("--gradcam_class", type=int, default=None,
                        help="class whose evidence Grad-CAM shows (default: the predicted class)")
    parser.add_argument("--categories", default=None, help="class names, one per line, for the Grad-CAM label")
    parser.add_argument("--image_tmpl", default=DEFAULT_IMAGE_TMPL,
                        help="frame file names in a frame folder (default: img_{:05d}.jpg)")
    return add_aliases(parser, {"--segments": "--num_segments", "--output": "--out"})


def main(args: argparse.Namespace) -> int:
    """Write the picture; returns the exit status (2 for unusable input, with the reason logged)."""
    if (args.segments is not None and args.segments < 1) or args.data_length < 2 or \
            (args.scale is not None and args.scale < 1):
        logger.error("--num_segments and --scale must be >= 1 and --data_length >= 2")
        return 2
    try:
        image = visualize(args.input, args.out, args.weights, args.segments, args.data_length, args.seed,
                          args.scale, args.image_tmpl, args.untrained, args.gradcam, args.gradcam_class,
                          args.categories)
    except (DemoError, CheckpointError, FileNotFoundError, SampleLoadError, VideoReadError, ValueError) as e:
        logger.error("%s", e)
        return 2
    logger.info("wrote %s (%dx%d)", args.out, *image.size)
    return 0


if __name__ == "__main__":
    setup_logging(True)
    sys.exit(main(get_args_parser().parse_args()))
