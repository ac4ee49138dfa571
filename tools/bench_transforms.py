"""Clips/s of the data loading against the published pipeline's own steps, in one run, one thread.

Writes JPEG frames (default 340x256, the published vid2img size; quality 92,
4:2:0 chroma subsampling) of a natural-looking textured scene -- a panning
colour texture with a 1/f^2 power spectrum, as natural images have, under the
moving objects of ``tools/make_synthetic.py``'s renderer drawn at 512 px --
into a temporary folder, then times on the same clips (``--num_segments`` x
``--length`` frames each; PAN Lite: 8 x 4, RGB: 8 x 1):

* ``train plain``: the published training pipeline (zhang-can/PAN-PyTorch
  ``ops/dataset.py`` + ``ops/transforms.py``), step by step: per frame
  ``Image.open(path).convert('RGB')``; GroupMultiScaleCrop (crop every frame,
  then PIL bilinear resize of every frame to the crop size);
  GroupRandomHorizontalFlip (``transpose`` per frame); Stack
  (``np.concatenate(..., axis=2)``); ToTorchFormatTensor (``permute``,
  ``contiguous``, ``float().div(255)``); GroupNormalize (``sub_``/``div_``
  per channel);
* ``train ops.transforms``: ``ops.transforms.train_transform`` on frames
  opened lazily from their bytes, as the dataset's frame sources give them;
* ``eval plain`` / ``eval ops.transforms``: the published validation pipeline
  (GroupScale(256) = torchvision ``Resize`` of the PIL image, GroupCenterCrop,
  Stack, ToTorchFormatTensor, GroupNormalize) and ``eval_transform``, which
  must give the same pixels.

Both sides read and decode the files inside the timed loop and take the same
crop and flip per clip. Pipelines are interleaved round by round, so that a
change of machine load affects them alike; the best round is kept. Threads are
limited to one (``torch.set_num_threads(1)``), as in a DataLoader worker.
``--decoders`` also times one frame's decode with PIL (exact and in draft
mode), simplejpeg (exact and fast) and ``torchvision.io.decode_jpeg`` (one
frame and a list). The AVX2 class is emulated with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (a lower bound).

    python tools/bench_transforms.py --num_segments 8 --length 4 --decoders   # PAN Lite
    python tools/bench_transforms.py --num_segments 8 --length 1              # RGB
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.machine import machine_description  # noqa: E402
from ops.modalities import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from ops.transforms import eval_transform, train_transform  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--size", default="340x256", help="frame size WxH (340x256: the published vid2img size)")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--num_segments", dest="segments", type=int, default=8, help="segments per clip")
    p.add_argument("--length", type=int, default=4, help="frames per segment (PA/Lite: 4, RGB: 1)")
    p.add_argument("--clips", type=int, default=10, help="clips timed per pipeline and round")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds; the best is kept")
    p.add_argument("--frames", type=int, default=64, help="distinct frames written")
    p.add_argument("--quality", type=int, default=92, help="JPEG quality of the frames written (4:2:0)")
    p.add_argument("--decoders", action="store_true", help="also time one frame's decode with each decoder")
    p.add_argument("--seed", type=int, default=0)
    return add_aliases(p, {"--segments": "--num_segments"})


# ------------------------------------------------------------------ machine


# ------------------------------------------------------------------ frames


def texture(rng: np.random.Generator, height: int, width: int, beta: float = 2.0) -> np.ndarray:
    """A colour field with a ``1/f^beta`` power spectrum (natural images: beta ~ 2), float ``[H, W, 3]``
    of zero mean and unit standard deviation per channel, channels correlated like RGB."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    planes = []
    for _ in range(3):
        spectrum = (rng.normal(size=(height, width)) + 1j * rng.normal(size=(height, width))) / f ** (beta / 2)
        plane = np.real(np.fft.ifft2(spectrum))
        planes.append((plane - plane.mean()) / plane.std())
    mix = np.array([[1.0, 0.8, 0.6], [0.1, 0.5, 0.2], [0.0, 0.2, 0.6]])
    out = np.stack(planes, -1) @ mix.T
    return out / out.std(axis=(0, 1))


def write_frames(folder: Path, n: int, width: int, height: int, seed: int, quality: int = 92) -> list[str]:
    """``n`` JPEG frames ``img_00001.jpg``... of a panning 1/f^2 texture under make_synthetic's moving
    objects, rendered at twice the size and shrunk with PIL's antialiased bilinear (as vid2img's
    scaler smooths a video), saved at ``quality`` with 4:2:0 subsampling."""
    from tools.make_synthetic import render_video

    rng = np.random.default_rng(seed)
    big_w, big_h = 2 * width, 2 * height
    field = texture(rng, big_h, big_w + 4 * n)
    objects = render_video(3, rng, size=max(big_w, big_h), num_frames=n).astype(np.float32)
    paths = []
    for i in range(n):
        background = 128 + 40 * field[:, 4 * i:4 * i + big_w]  # the camera pans 2 px per frame
        layer = objects[i, :big_h, :big_w]
        arr = 0.55 * background + 0.45 * layer + rng.normal(0, 2, background.shape)
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
        p = folder / f"img_{i + 1:05d}.jpg"
        img.save(p, "JPEG", quality=quality, subsampling=2)
        paths.append(str(p))
    return paths


# ------------------------------------------------------------------ the published pipeline


def published_tail(imgs: list[Image.Image]) -> torch.Tensor:
    """Stack, ToTorchFormatTensor(div=True), GroupNormalize of the published code."""
    arr = np.concatenate(imgs, axis=2)  # Stack(roll=False): PIL images -> one HxWx3F array
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div(255)
    rep = t.shape[0] // 3
    for c, m, s in zip(t, list(IMAGENET_MEAN) * rep, list(IMAGENET_STD) * rep):
        c.sub_(m).div_(s)
    return t


def published_train(paths: list[str], crop: int, box: tuple[int, int, int, int], flipped: bool) -> torch.Tensor:
    """The published training clip: ``_load_image``, GroupMultiScaleCrop, GroupRandomHorizontalFlip, tail."""
    group = [Image.open(p).convert("RGB") for p in paths]
    x, y, w, h = box
    group = [img.crop((x, y, x + w, y + h)) for img in group]
    group = [img.resize((crop, crop), Image.BILINEAR) for img in group]
    if flipped:
        group = [img.transpose(Image.FLIP_LEFT_RIGHT) for img in group]
    return published_tail(group)


def published_eval(paths: list[str], crop: int, scale: int) -> torch.Tensor:
    """The published validation clip: GroupScale(scale), GroupCenterCrop(crop), tail."""
    import torchvision.transforms as T

    resize, center = T.Resize(scale, Image.BILINEAR), T.CenterCrop(crop)
    group = [Image.open(p).convert("RGB") for p in paths]
    group = [center(resize(img)) for img in group]
    return published_tail(group)


def lazy_open(paths: list[str]) -> list[Image.Image]:
    """As the dataset's frame sources: read the bytes, open without decoding."""
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(Image.open(io.BytesIO(f.read())))
    return out


# ------------------------------------------------------------------ timing


def time_interleaved(fns: dict[str, Callable[[int], object]], num_clips: int, rounds: int) -> dict[str, float]:
    """Clips/s of each pipeline ``fn(clip_index)``: best of ``rounds``, pipelines interleaved
    round by round so that a change of machine load affects them alike."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn(0)  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for i in range(num_clips):
                fn(i)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: num_clips / t for name, t in best.items()}


def decoder_times(paths: list[str], repeats: int = 100) -> dict[str, float]:
    """Milliseconds per frame of each available JPEG decoder (to an RGB uint8 array), one thread."""
    datas = [open(p, "rb").read() for p in paths]
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]

    def pil(d: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(d)).convert("RGB"))

    def pil_draft(d: bytes) -> np.ndarray:
        img = Image.open(io.BytesIO(d))
        img.draft("RGB", img.size)  # scale 1; PIL 13's draft keeps the exact IDCT and upsampling
        return np.asarray(img.convert("RGB"))

    fns: dict[str, Callable[[int], object]] = {
        "PIL open+convert('RGB')+asarray": lambda i: pil(datas[i % len(datas)]),
        "PIL draft (scale 1)": lambda i: pil_draft(datas[i % len(datas)]),
    }
    try:
        import simplejpeg
        fns["simplejpeg exact"] = lambda i: simplejpeg.decode_jpeg(datas[i % len(datas)])
        fns["simplejpeg fastdct+fastupsample"] = lambda i: simplejpeg.decode_jpeg(
            datas[i % len(datas)], fastdct=True, fastupsample=True)
    except ImportError:
        print("  (simplejpeg is not installed: pip install simplejpeg)")
    from torchvision.io import decode_jpeg
    fns["torchvision decode_jpeg, one frame"] = lambda i: decode_jpeg(tensors[i % len(tensors)])
    batch = tensors[:16]
    fns["torchvision decode_jpeg, list of 16 (per frame)"] = lambda i: decode_jpeg(batch)
    out = {}
    for name, fn in fns.items():
        fn(0)
        n = repeats // 16 if "list" in name else repeats
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        out[name] = 1e3 * (time.perf_counter() - t0) / n / (16 if "list" in name else 1)
    return out


def main(args: argparse.Namespace) -> dict[str, float]:
    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(args.seed)
    per_clip = args.segments * args.length
    train_t = train_transform(args.crop, None, flip=True)
    eval_t = eval_transform(args.crop)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_frames(Path(tmp), args.frames, width, height, args.seed, args.quality)
        kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
        clips = []
        for _ in range(args.clips):
            starts = rng.integers(0, len(paths) - args.length + 1, size=args.segments)
            clips.append([paths[s + j] for s in starts for j in range(args.length)])
        # One draw per clip, used by both sides: the published draws the same way (same geometry, tested).
        draws = [train_t.draw(width, height, random.Random(i)) for i in range(len(clips))]
        gens = [random.Random(i) for i in range(len(clips))]

        def ours_train(i: int) -> torch.Tensor:
            gens[i].seed(i)
            return train_t(lazy_open(clips[i]), gens[i])

        def published_train_clip(i: int) -> torch.Tensor:
            box, flipped = draws[i]
            return published_train(clips[i], args.crop, tuple(int(v) for v in box), flipped)

        results = time_interleaved({
            "train plain": published_train_clip,
            "train ops.transforms": ours_train,
            "eval plain": lambda i: published_eval(clips[i], args.crop, eval_t.scale_size),
            "eval ops.transforms": lambda i: eval_t(lazy_open(clips[i])),
        }, len(clips), args.rounds)
        decoders = decoder_times(paths) if args.decoders else {}
    print(f"machine: {machine_description(torch.device('cpu'))}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"frames {width}x{height} JPEG q{args.quality} 4:2:0 ({kb:.1f} KB mean), crop {args.crop}, "
          f"{args.segments} segments x {args.length} frames = {per_clip} frames/clip, "
          f"best of {args.rounds} rounds of {args.clips} clips, 1 thread")
    names = {"train plain": "train published", "eval plain": "eval published"}
    for name, v in results.items():
        print(f"  {names.get(name, name):22s} {v:7.2f} clips/s  {1e3 / v:7.2f} ms/clip")
    print(f"  train speed-up: {results['train ops.transforms'] / results['train plain']:.2f}x, "
          f"eval speed-up: {results['eval ops.transforms'] / results['eval plain']:.2f}x")
    if decoders:
        print("  decode of one frame, ms:")
        for name, ms in decoders.items():
            print(f"    {name:48s} {ms:6.3f}")
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
