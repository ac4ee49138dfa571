"""PA against optical flow: frame pairs per second on the same decoded video frames.

The paper's headline: "PA is over 1000x faster than optical flow (8196 fps vs
8 fps)". This script measures what we get, in one process, on the same frames:

1. renders a short video of moving textured shapes with motion blur and sensor
   noise (``tools/make_synthetic.render_video``) at ``--size``², encodes it to
   mp4 with PyAV and decodes it back, so that the frames carry real codec
   artefacts rather than being noise;
2. times, over the ``T - 1`` neighbouring frame pairs of that video:

   * ``PA per pair``: ``PA`` (the default fast path) on one pair at a time
     (``n_length=2``), one map per call;
   * ``PA batched``: ``PA`` on the whole clip at once (``n_length=T``), as PAN
     uses it: all the pairs of a clip in one call;
   * ``Farneback``: ``cv2.calcOpticalFlowFarneback`` (OpenCV's usual parameters:
     pyramid 0.5, 3 levels, window 15, 3 iterations, poly_n 5, sigma 1.2);
   * ``TV-L1``: ``cv2.optflow.DualTVL1OpticalFlow_create()`` with OpenCV's
     defaults, the flow that two-stream networks (and the paper's comparison) use.

One PA map and one flow field each come from one frame pair, so both are
counted as frame pairs per second. Inputs are prepared before timing (PA:
normalised float tensors; flow: grayscale uint8), so neither side pays for
decoding or colour conversion. PA runs on ``--device``; OpenCV flow always runs
on the CPU (the pip wheels have no CUDA). Every method is timed once per repeat,
in turn; the figures are medians over ``--repeats``.

OpenCV is an optional, benchmark-only dependency (not in requirements.txt);
without it the PA figures are still measured and the flow baselines are
reported as skipped, with the reason and how to install it::

    .venv/bin/pip install opencv-contrib-python-headless
    python tools/bench_flow.py                    # 16 frames of 224², CPU
    python tools/bench_flow.py --device cuda      # PA on the GPU
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.modalities import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from ops.PAN_modules import PA  # noqa: E402
from ops.runtime import resolve_device  # noqa: E402
from ops.video_reader import read_frames  # noqa: E402
from ops.machine import machine_description  # noqa: E402
from tools.bench_pa import interleaved_medians, load_average  # noqa: E402
from tools.make_synthetic import render_video, write_mp4  # noqa: E402

logger = logging.getLogger("bench_flow")

OPENCV_HINT = "install it into the venv with: .venv/bin/pip install opencv-contrib-python-headless"

#: The paper's figures (GPU): PA maps and TV-L1 flow fields per second.
PAPER_PA_FPS = 8196
PAPER_FLOW_FPS = 8


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--device", default="cpu", help="where PA runs: cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--size", type=int, default=224, help="frame height and width (default 224, as in the paper)")
    p.add_argument("--frames", type=int, default=16, help="frames in the video; pairs = frames - 1 (default 16)")
    p.add_argument(
        "--tvl1-pairs",
        type=int,
        default=3,
        help="frame pairs TV-L1 computes per repeat (default 3: it takes seconds per pair on a CPU)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed rounds; medians are reported (default 5)")
    p.add_argument("--threads", type=int, default=None, help="threads for torch and OpenCV (default: their own choice)")
    p.add_argument(
        "--tvl1",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time TV-L1 (default on; needs opencv-contrib, --no-tvl1 times Farneback only)",
    )
    p.add_argument("--class-index", type=int, default=0, help="which synthetic motion class to render (default 0)")
    p.add_argument("--seed", type=int, default=0)
    return add_aliases(p)


#: Why the flow baselines are skipped when OpenCV is not installed (printed in their place).
NO_OPENCV = f"skipped: OpenCV is not installed (an optional, benchmark-only dependency); {OPENCV_HINT}"


def import_opencv(need_tvl1: bool) -> ModuleType | None:
    """``cv2``; ``None`` when OpenCV is not installed (the flow baselines are then skipped, see
    :data:`NO_OPENCV`); a SystemExit that says what to install when TV-L1 is asked for and this
    OpenCV lacks it."""
    try:
        import cv2
    except ImportError:
        return None
    if need_tvl1 and not hasattr(cv2, "optflow"):
        raise SystemExit(
            f"this OpenCV ({cv2.__version__}) has no cv2.optflow, which TV-L1 needs: it is in the contrib build; "
            f"{OPENCV_HINT} (and uninstall opencv-python*), or pass --no-tvl1"
        )
    return cv2


def decoded_video(size: int, num_frames: int, class_index: int, seed: int) -> np.ndarray:
    """``[T, size, size, 3]`` uint8 RGB: rendered, encoded to mp4, decoded back."""
    video = render_video(class_index, np.random.default_rng(seed), size=size, num_frames=num_frames)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        write_mp4(path, video)
        frames = read_frames(str(path), range(num_frames))
    return np.stack(frames)


def pa_input(video: np.ndarray, device: torch.device) -> torch.Tensor:
    """Normalised frames as PAN sees them, ``[T, 3, H, W]`` float32."""
    x = torch.from_numpy(video).to(device).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def main(args: argparse.Namespace) -> dict[str, float]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.frames < 2:
        raise SystemExit(f"--frames must be at least 2 (one pair), got {args.frames}")
    cv2 = import_opencv(args.tvl1)
    skipped = {}  # flow baselines that cannot run here, and why
    if cv2 is None:
        skipped = {"Farneback": NO_OPENCV, **({"TV-L1": NO_OPENCV} if args.tvl1 else {})}
    if args.threads:
        torch.set_num_threads(args.threads)
        if cv2 is not None:
            cv2.setNumThreads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    video = decoded_video(args.size, args.frames, args.class_index, args.seed)
    pairs = args.frames - 1
    tvl1_pairs = min(args.tvl1_pairs, pairs)
    frames = pa_input(video, device)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in video] if cv2 is not None else []

    pa_pair = PA(n_length=2).to(device).eval()
    pa_clip = PA(n_length=args.frames).to(device).eval()
    pa_clip.load_state_dict(pa_pair.state_dict())
    pair_inputs = [frames[t : t + 2] for t in range(pairs)]

    def pa_per_pair() -> object:
        with torch.inference_mode():
            return [pa_pair(x) for x in pair_inputs]

    def pa_batched() -> object:
        with torch.inference_mode():
            return pa_clip(frames)

    def farneback() -> object:
        return [cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0) for t in range(pairs)]

    methods = {"PA per pair": (pa_per_pair, pairs), "PA batched": (pa_batched, pairs)}
    if cv2 is not None:
        methods["Farneback"] = (farneback, pairs)
    if cv2 is not None and args.tvl1:
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()

        def tv_l1() -> object:
            return [tvl1.calc(gray[t], gray[t + 1], None) for t in range(tvl1_pairs)]

        methods["TV-L1"] = (tv_l1, tvl1_pairs)

    # The PA maps agree with each other however they are batched.
    with torch.inference_mode():
        single = torch.cat([pa_pair(x) for x in pair_inputs], dim=1)
        assert torch.allclose(single, pa_clip(frames), rtol=1e-5, atol=1e-6)

    logger.info("video: %d decoded frames of %dx%d (rendered, mp4-encoded, decoded), %d frame pairs; PA on %s, "
                "flow on the CPU", args.frames, args.size, args.size, pairs, device)
    logger.info("machine: %s; %s", machine_description(device),
                f"OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads" if cv2 is not None
                else "OpenCV not installed")
    logger.info("date: %s; before: %s", datetime.date.today().isoformat(), load_average())
    medians = interleaved_medians({name: fn for name, (fn, _) in methods.items()}, args.repeats, 1, device)
    logger.info("after: %s; medians of %d interleaved repeats", load_average(), args.repeats)
    fps = {name: count / medians[name] for name, (_, count) in methods.items()}
    for name, value in fps.items():
        logger.info("  %-12s %10.1f frame pairs/s", name, value)
    for name, reason in skipped.items():
        logger.info("  %-12s %s", name, reason)
    for flow in ("TV-L1", "Farneback"):
        if flow in fps:
            logger.info("  PA batched / %-9s %8.1fx   (PA per pair / %s: %.1fx)", flow,
                        fps["PA batched"] / fps[flow], flow, fps["PA per pair"] / fps[flow])
    logger.info("  paper (GPU): PA %d fps / TV-L1 %d fps = %.0fx", PAPER_PA_FPS, PAPER_FLOW_FPS,
                PAPER_PA_FPS / PAPER_FLOW_FPS)
    return fps


if __name__ == "__main__":
    main(get_args_parser().parse_args())
