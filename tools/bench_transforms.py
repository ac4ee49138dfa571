"""Throughput of the training transform against a plain per-frame PIL pipeline, in one run.

Writes JPEG frames of the chosen size into a temporary folder, then times, on
the same clips (``--num_segments`` x ``--length`` frames each):

* ``plain``: the published style, frame by frame -- full decode,
  ``convert('RGB')``, crop, PIL bilinear resize, flip, ``np.array`` per frame,
  concatenate, ``float().div(255)``, per-channel normalisation;
* ``ops.transforms.train_transform`` on lazily opened frames (draft decode,
  batched uint8 resize, float at the end);
* the evaluation path of both, for reference (it must give the same pixels,
  so it is not expected to be faster).

Both decode the JPEG files inside the timed loop. Threads are limited to one
(``torch.set_num_threads(1)``), as in a DataLoader worker. Prints clips/s.

    python tools/bench_transforms.py --size 340x256 --num_segments 8 --length 4
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.modalities import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from ops.transforms import (  # noqa: E402
    center_crop_offset,
    eval_transform,
    scaled_size,
    train_transform,
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--size", default="340x256", help="frame size WxH (default 340x256, Kinetics-style)")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--num_segments", dest="segments", type=int, default=8, help="segments per clip")
    p.add_argument("--length", type=int, default=4, help="frames per segment (PA: 4)")
    p.add_argument("--clips", type=int, default=10, help="clips timed per pipeline and round")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds; the best is kept")
    p.add_argument("--frames", type=int, default=64, help="distinct frames written")
    p.add_argument("--seed", type=int, default=0)
    return add_aliases(p, {"--segments": "--num_segments"})


def write_frames(folder: Path, n: int, width: int, height: int, seed: int) -> list[str]:
    """Smooth moving content with mild noise: compresses like real video frames."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(n):
        base = np.stack([
            128 + 90 * np.sin((xx + 3 * i) / 23.0 + yy / 41.0),
            128 + 80 * np.cos((yy - 2 * i) / 31.0),
            128 + 70 * np.sin((xx + yy + 5 * i) / 57.0),
        ], -1)
        arr = (base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
        p = folder / f"img_{i + 1:05d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        paths.append(str(p))
    return paths


def _published_tensor(imgs: list[Image.Image]) -> torch.Tensor:
    arr = np.concatenate([np.array(i) for i in imgs], axis=2)
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div(255)
    reps = t.shape[0] // 3
    for c, m, s in zip(t, list(IMAGENET_MEAN) * reps, list(IMAGENET_STD) * reps):
        c.sub_(m).div_(s)
    return t


def plain_train(paths: list[str], crop: int, draw) -> torch.Tensor:
    (x, y, w, h), flipped = draw
    out = []
    for p in paths:
        img = Image.open(p).convert("RGB")
        img = img.crop((x, y, x + w, y + h)).resize((crop, crop), Image.BILINEAR)
        if flipped:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(img)
    return _published_tensor(out)


def plain_eval(paths: list[str], crop: int, scale: int) -> torch.Tensor:
    out = []
    for p in paths:
        img = Image.open(p).convert("RGB")
        img = img.resize(scaled_size(img.size[0], img.size[1], scale), Image.BILINEAR)
        x, y = center_crop_offset(img.size[0], img.size[1], crop, crop)
        out.append(img.crop((x, y, x + crop, y + crop)))
    return _published_tensor(out)


def lazy_open(paths: list[str]) -> list[Image.Image]:
    # As the dataset does: read the bytes, open without decoding.
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(Image.open(io.BytesIO(f.read())))
    return out


def _time_all(fns: dict, clips, rounds: int) -> dict[str, float]:
    """clips/s of each pipeline: best of ``rounds``, pipelines interleaved round by round
    so that a change of machine load affects them alike."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn(clips[0])  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for c in clips:
                fn(c)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: len(clips) / t for name, t in best.items()}


def main(args: argparse.Namespace) -> dict[str, float]:
    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(args.seed)
    per_clip = args.segments * args.length
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_frames(Path(tmp), args.frames, width, height, args.seed)
        clips = []
        for _ in range(args.clips):
            starts = rng.integers(0, len(paths) - args.length + 1, size=args.segments)
            clips.append([paths[s + j] for s in starts for j in range(args.length)])
        train_t = train_transform(args.crop, None, flip=True)
        eval_t = eval_transform(args.crop)
        draws = [train_t.draw(width, height, np.random.default_rng(i)) for i in range(len(clips))]
        it = iter(range(10**9))

        def plain_train_fn(c):
            return plain_train(c, args.crop, draws[next(it) % len(draws)])

        results = _time_all({
            "train plain": plain_train_fn,
            "train ops.transforms": lambda c: train_t(lazy_open(c), np.random.default_rng(0)),
            "eval plain": lambda c: plain_eval(c, args.crop, eval_t.scale_size),
            "eval ops.transforms": lambda c: eval_t(lazy_open(c)),
        }, clips, args.rounds)
    print(f"frames {width}x{height}, crop {args.crop}, {args.segments} segments x {args.length} frames "
          f"= {per_clip} frames/clip, best of {args.rounds} rounds of {args.clips} clips, 1 thread")
    for name, v in results.items():
        print(f"  {name:22s} {v:7.2f} clips/s")
    print(f"  train speed-up: {results['train ops.transforms'] / results['train plain']:.2f}x, "
          f"eval speed-up: {results['eval ops.transforms'] / results['eval plain']:.2f}x")
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
