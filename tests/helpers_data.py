"""Tiny data the data tests create in tmp dirs: JPEG frame folders, list files, videos.

Each frame is a flat image whose colour encodes its number (``colour(i)``),
so a test can tell which frame it got back even after lossy coding.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
from PIL import Image


def colour(i: int) -> tuple[int, int, int]:
    """RGB colour of frame ``i`` (1-based); distinct for i < 256."""
    return ((i % 32) * 8, (i // 32) * 32, 128)


def frame_number(arr: np.ndarray) -> int:
    """Inverse of :func:`colour` for a decoded frame ``[H, W, 3]``."""
    a = np.asarray(arr, dtype=np.float64)
    r, g = a[..., 0].mean(), a[..., 1].mean()
    return int(round(r / 8)) % 32 + 32 * int(round(g / 32))


def make_frames(folder: Path, n: int, size=(40, 30), tmpl: str = "img_{:05d}.jpg", pattern=False) -> Path:
    """Write ``n`` JPEG frames numbered from 1; ``pattern`` adds a texture (for resize tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(1, n + 1):
        if pattern:
            rng = np.random.default_rng(i)
            yy, xx = np.mgrid[0:h, 0:w]
            base = (xx * 3 + yy * 5 + i * 11)[..., None] + np.array([0, 40, 80])
            arr = (base % 256 + rng.integers(0, 30, (h, w, 3))).clip(0, 255).astype(np.uint8)
        else:
            arr = np.full((h, w, 3), colour(i), dtype=np.uint8)
        Image.fromarray(arr).save(folder / tmpl.format(i), quality=95)
    return folder


def make_video(path: Path, n: int, size=(64, 48), fps: int = 25, codec: str = "mpeg4", gop: int = 10) -> Path:
    """Encode ``n`` flat frames (colour :func:`colour`) with PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
            stream.bit_rate = 2_000_000
        for i in range(1, n + 1):
            arr = np.full((h, w, 3), colour(i), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_list(path: Path, rows) -> Path:
    """Write a TSN list file from ``(path, num_frames, label)`` rows."""
    path.write_text("".join(f"{p} {n} {lab}\n" for p, n, lab in rows))
    return path


def file_size(path: Path) -> int:
    return os.path.getsize(path)
