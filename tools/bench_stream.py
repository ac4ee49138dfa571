"""Cost of streaming PAN: one online step against a full clip forward, and whether a stream keeps up.

For each backbone (random weights, one-way shift, VAP, ``T`` segments of
``m`` frames at ``--crop_size``) it times, in interleaved rounds (each round
runs each measurement once, so a load that comes and goes falls on all alike):

* ``clip``: the offline model on one clip of ``T`` segments (what a stream
  would cost if it re-ran the whole window for every prediction);
* ``step``: one online step, i.e. the ``m`` frames of one new segment pushed one
  by one through :class:`ops.streaming.StreamingPAN` (``m - 1`` PA convolutions,
  the backbone on one segment with its shift buffers, the head over the ring);
* ``frame``: the push of the frame that completes a segment (the latency a
  viewer sees after that frame).

It prints p50/p90/p99 per measurement, the clip/step ratio (goal >= 6 for 8
segments) and whether the stream keeps up with ``--fps`` input (one prediction
every ``m`` frames: the step's p50 within ``m / fps``), with the CPU class
(``torch.backends.cpu.get_cpu_capability()`` and lscpu's model name). The AVX2
class can be approximated on an AVX-512 machine with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``.

Example::

    python tools/bench_stream.py --arch resnet50 mobilenet_v2 --threads 2 --repeats 10 --out bench_stream.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.backbones import BACKBONES  # noqa: E402
from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.machine import cpu_model, isa_line  # noqa: E402
from ops.models import PAN  # noqa: E402
from ops.streaming import StreamingPAN, split_frames  # noqa: E402

logger = logging.getLogger("bench_stream")


def stats(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "min": float(a.min())}


def bench_arch(arch: str, args: argparse.Namespace) -> dict:
    """Interleaved timings of one backbone (see the module docstring)."""
    torch.manual_seed(0)
    model = PAN(args.num_class, args.num_segments, args.modality, base_model=arch, pretrain=None, is_shift=True,
                shift_mode="online", has_VAP=True, partial_bn=False, data_length=args.data_length).eval()
    stream = StreamingPAN(model)
    m, size = model.new_length, args.crop_size
    clip = torch.randn(1, args.num_segments * m * 3, size, size)
    frames = split_frames(clip)
    times: dict[str, list[float]] = {"clip": [], "step": [], "frame": []}
    with torch.inference_mode():
        model(clip)  # warm-up: allocator, oneDNN primitives
        for frame in frames[:2 * m]:
            stream.push_frame(frame)
        for round_ in range(args.repeats):
            tick = time.perf_counter()
            model(clip)
            times["clip"].append(time.perf_counter() - tick)
            for _ in range(args.steps_per_round):
                segment = frames[(round_ % args.num_segments) * m:][:m]
                step_start = time.perf_counter()
                for frame in segment:
                    tick = time.perf_counter()
                    out = stream.push_frame(frame)
                last = time.perf_counter()
                assert out is not None
                times["frame"].append(last - tick)
                times["step"].append(last - step_start)
    result = {name: stats(values) for name, values in times.items()}
    budget_ms = 1000.0 * m / args.fps
    result.update({
        "arch": arch, "ratio_clip_over_step": result["clip"]["p50"] / result["step"]["p50"],
        "budget_ms": budget_ms, "keeps_up": result["step"]["p50"] <= budget_ms,
        "steps_measured": len(times["step"]), "clips_measured": len(times["clip"]),
    })
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--arch", nargs="+", choices=list(BACKBONES), default=["resnet50", "mobilenet_v2"],
                   help="backbones to measure")
    p.add_argument("--modality", choices=("Lite", "PA", "RGB"), default="Lite", help="PAN variant")
    p.add_argument("--num_segments", type=int, default=8, help="segments per window T")
    p.add_argument("--data_length", type=int, default=4, help="frames per segment m (PA and Lite)")
    p.add_argument("--crop_size", type=int, default=224, help="frame size in pixels")
    p.add_argument("--num_class", type=int, default=174, help="classes of the head")
    p.add_argument("--fps", type=float, default=25.0, help="input frame rate the stream must keep up with")
    p.add_argument("--repeats", type=int, default=10, help="interleaved rounds (one clip forward each)")
    p.add_argument("--steps_per_round", type=int, default=3, help="online steps per round")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    return add_aliases(p)


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = {"cpu": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(), "isa": isa_line(),
               "threads": torch.get_num_threads(), "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
               "loadavg_before": os.getloadavg(), "torch": torch.__version__}
    print(f"CPU: {machine['cpu']}, torch capability {machine['capability']}, {machine['threads']} threads, "
          f"load average {machine['loadavg_before'][0]:.1f} at the start (other jobs share these cores)")
    print(machine["isa"])
    results = []
    for arch in args.arch:
        r = bench_arch(arch, args)
        results.append(r)
        print(f"PAN {args.modality} {arch} {args.num_segments}x{args.data_length} at {args.crop_size}px:")
        for name in ("clip", "step", "frame"):
            s = r[name]
            print(f"  {name:<5} p50 {s['p50']:8.1f}  p90 {s['p90']:8.1f}  p99 {s['p99']:8.1f}  min {s['min']:8.1f} ms")
        print(f"  one online step is {r['ratio_clip_over_step']:.1f}x cheaper than a clip forward (goal >= 6); "
              f"keeps up with {args.fps:g} fps (one prediction per {args.data_length} frames, {r['budget_ms']:.0f} ms): "
              f"{'yes' if r['keeps_up'] else 'NO'}")
    machine["loadavg_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "args": vars(args), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(get_args_parser().parse_args()))
