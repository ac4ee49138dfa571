"""Speed of PA against the published formulation, side by side in one process.

Times, on the same random frames and the same 7x7 weights (one clip of
``--num_segments`` x ``--length`` frames of ``--size``² by default, i.e. the PA input
``[32, 3, 224, 224]`` of the paper's 8x4 set-up):

* ``published``: the released formulation -- the shallow conv (with its bias) on
  every frame, one ``torch.norm(a - b + 1e-6, dim=1)`` per pair of neighbouring
  frames in a Python loop, ``unsqueeze``, ``torch.cat`` and a ``view``;
* ``diffconv``: :func:`ops.PAN_modules.pa_maps`, the straightforward version:
  the conv on the ``m - 1`` frame differences, then a norm over the channels;
* ``fast``: :func:`ops.pa_fast.pa_maps_fast` (what ``PA`` runs): channels-last
  differences, ``eps`` as the conv bias, a contiguous norm, a custom backward,
  and on the CPU groups in cache-sized chunks;
* ``compiled`` (with ``--compile``): ``torch.compile`` of ``diffconv``;
* with ``--ideas``, ``fast-1chunk`` (the fast path in one chunk, as off the
  CPU: what the chunks buy) and two ideas that were measured and not kept: ``nchw-fused``
  (the fast path's steps without channels-last: what the layout alone buys) and
  ``unfold`` (the conv as an explicit ``[147]``-patch matrix product, i.e. the
  Gram / quadratic-form family: ``||W d||`` per 7x7x3 patch ``d``).

Forward runs under ``torch.no_grad``; forward+backward back-propagates a
``sum()`` of the maps into the conv weight (the frames are data and need no
gradient, as in training; ``--input-grad`` adds the frames' gradient).

Each repeat times every variant once, in turn, so that load from other processes
hits all of them alike; the figures are medians over ``--repeats``. The speed-ups
are ``published`` median / variant median. Before timing, every variant's maps
are checked against ``published`` (max abs difference is printed).

    python tools/bench_pa.py                      # 8 segments x 4 frames, 224², CPU
    python tools/bench_pa.py --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.machine import machine_description  # noqa: E402
from ops.PAN_modules import PA_EPS, pa_maps  # noqa: E402
from ops import pa_fast  # noqa: E402
from ops.pa_fast import pa_maps_fast  # noqa: E402
from ops.runtime import resolve_device  # noqa: E402

logger = logging.getLogger("bench_pa")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--clips", type=int, default=1, help="clips per batch N (default 1: the paper's latency case)")
    p.add_argument("--num_segments", dest="segments", type=int, default=8, help="segments per clip T (default 8, as in the paper)")
    p.add_argument("--length", type=int, default=4, help="frames per segment m (default 4, as in the paper)")
    p.add_argument("--size", type=int, default=224, help="frame height and width (default 224)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds; medians are reported (default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument(
        "--input-grad",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also back-propagate into the frames (default off: frames are data in training)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="add torch.compile of the straightforward version (default off: compiling takes a while)",
    )
    p.add_argument(
        "--ideas",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="add fast-1chunk and the measured-and-rejected variants nchw-fused and unfold (default off; unfold "
        "needs ~1 GB at 224²)",
    )
    p.add_argument("--seed", type=int, default=0)
    return add_aliases(p, {"--segments": "--num_segments"})


def published_pa(frames: torch.Tensor, conv: nn.Conv2d, n_length: int) -> torch.Tensor:
    """The released formulation, ``[G*m, 3, H, W] -> [G, m-1, H, W]``.

    ``nn.PairwiseDistance(p=2)`` reduced over dim 1 of ``[G, C', H*W]`` on the
    PyTorch of the paper; ``torch.norm(..., dim=1)`` is that reduction today.
    """
    height, width = frames.shape[-2:]
    features = conv(frames).view(-1, n_length, conv.out_channels, height * width)
    maps = []
    for i in range(n_length - 1):
        distance = torch.norm(features[:, i] - features[:, i + 1] + 1e-6, p=2, dim=1)
        maps.append(distance.unsqueeze(1))
    return torch.cat(maps, dim=1).view(-1, n_length - 1, height, width)


def nchw_fused_pa(frames: torch.Tensor, weight: torch.Tensor, n_length: int) -> torch.Tensor:
    """The fast path's arithmetic (differences, eps as bias) in the default NCHW layout."""
    grouped = frames.reshape(-1, n_length, *frames.shape[1:])
    diffs = (grouped[:, :-1] - grouped[:, 1:]).flatten(0, 1)
    bias = torch.full((weight.shape[0],), PA_EPS, dtype=weight.dtype, device=weight.device)
    features = F.conv2d(diffs, weight, bias, padding=weight.shape[-1] // 2)
    return torch.linalg.vector_norm(features, dim=1).view(-1, n_length - 1, *frames.shape[-2:])


def unfold_pa(frames: torch.Tensor, weight: torch.Tensor, n_length: int) -> torch.Tensor:
    """The conv as a matrix product over explicit ``C*k*k`` patches of the differences."""
    grouped = frames.reshape(-1, n_length, *frames.shape[1:])
    diffs = (grouped[:, :-1] - grouped[:, 1:]).flatten(0, 1)
    patches = F.unfold(diffs, weight.shape[-1], padding=weight.shape[-1] // 2)  # [B, C*k*k, H*W]
    features = torch.matmul(weight.flatten(1), patches) + PA_EPS  # [B, C', H*W]
    return torch.linalg.vector_norm(features, dim=1).view(-1, n_length - 1, *frames.shape[-2:])


def load_average() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each function, timed in turn within every repeat."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _variants(
    conv: nn.Conv2d, n_length: int, compile_: bool, ideas: bool
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    weight = conv.weight
    variants = {
        "published": lambda x: published_pa(x, conv, n_length),
        "diffconv": lambda x: pa_maps(x, weight, n_length),
        "fast": lambda x: pa_maps_fast(x, weight, n_length, PA_EPS),
    }
    if compile_:
        compiled = torch.compile(pa_maps, dynamic=False)
        variants["compiled"] = lambda x: compiled(x, weight, n_length)
    if ideas:
        # The fast path as one chunk (what it does off the CPU): what cache-sized chunks buy.
        variants["fast-1chunk"] = lambda x: pa_fast._pa_maps_chunk(x, weight, n_length, PA_EPS)
        variants["nchw-fused"] = lambda x: nchw_fused_pa(x, weight, n_length)
        variants["unfold"] = lambda x: unfold_pa(x, weight, n_length)
    return variants


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    n_frames = args.clips * args.segments * args.length
    frames = torch.randn(n_frames, 3, args.size, args.size, device=device)
    conv = nn.Conv2d(3, 8, kernel_size=7, padding=3).to(device)
    variants = _variants(conv, args.length, args.compile, args.ideas)

    with torch.no_grad():
        expected = variants["published"](frames)
        for name, fn in variants.items():
            error = (fn(frames) - expected).abs().max().item()
            logger.info("%-10s max abs difference from published: %.2e", name, error)

    def forward(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn(frames)

        return run

    grad_frames = frames.clone().requires_grad_(args.input_grad)

    def forward_backward(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            conv.zero_grad(set_to_none=True)
            grad_frames.grad = None
            fn(grad_frames).sum().backward()
            return conv.weight.grad

        return run

    logger.info("PA on [%d, 3, %d, %d] (%d clip x %d segments x %d frames), %s, fp32",
                n_frames, args.size, args.size, args.clips, args.segments, args.length, device)
    logger.info("machine: %s", machine_description(device))
    logger.info("date: %s; before: %s", datetime.date.today().isoformat(), load_average())
    results = {
        "forward": interleaved_medians({k: forward(f) for k, f in variants.items()}, args.repeats, args.warmup, device),
        "forward+backward": interleaved_medians(
            {k: forward_backward(f) for k, f in variants.items()}, args.repeats, args.warmup, device
        ),
    }
    logger.info("after: %s; medians of %d interleaved repeats", load_average(), args.repeats)
    backward_into = "weight and frames" if args.input_grad else "weight"
    for mode, medians in results.items():
        label = mode if mode == "forward" else f"{mode} (grad of {backward_into})"
        logger.info("%s:", label)
        for name, seconds in medians.items():
            logger.info("  %-10s %8.1f ms   %5.2fx", name, seconds * 1e3, medians["published"] / seconds)
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
