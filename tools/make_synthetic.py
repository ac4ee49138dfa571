"""Generate the built-in synthetic video dataset, where only motion tells the class.

The dataset has 12 classes in 6 *mirror pairs*. The two classes of a pair differ
only in the direction of time ("moving something left" / "moving something
right", "growing" / "shrinking", ...): a video of the second class is rendered
exactly like a video of the first class and then played backwards. A single
frame therefore has the same distribution in both classes of a pair, and a model
without temporal modelling (TSN with average consensus) cannot tell them apart.

Output layout (TSN style, all paths relative to the output root)::

    category.txt                 one class name per line, line index = label
    frames/video_000000/img_00001.jpg ...
    train_list.txt, val_list.txt lines "frames/<vid> <num_frames> <label>"
    videos/video_000000.mp4      only with --videos
    train_videolist.txt, val_videolist.txt   (with --videos)
                                 lines "videos/<vid>.mp4 <num_frames> <label>"
    dataset.json                 manifest; written last, marks a finished dataset

Generation happens in a temporary sibling folder that is renamed into place at
the end, so an interrupted run never leaves a folder that looks finished.

Usage::

    python tools/make_synthetic.py                      # -> data/synthetic
    python tools/make_synthetic.py --out /tmp/syn --size 32 --frames 16 --videos

Importable API: :data:`CLASS_NAMES`, :data:`MIRROR_PAIRS`, :func:`mirror_of`,
:func:`video_rng`, :func:`render_video`, :func:`generate`,
:func:`read_manifest`, :func:`is_complete`, :func:`get_args_parser`, :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from ops.cli import HelpFormatter, add_aliases  # noqa: E402

logger = logging.getLogger("make_synthetic")

#: Bumped whenever the rendered pixels or the layout change; part of the manifest.
GENERATOR_VERSION = 1

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "synthetic"

#: Class names; the list index is the label. Classes 2k and 2k+1 form a mirror pair.
CLASS_NAMES: list[str] = [
    "moving something left",
    "moving something right",
    "moving something up",
    "moving something down",
    "something growing",
    "something shrinking",
    "rotating something clockwise",
    "rotating something anticlockwise",
    "something fading in",
    "something fading out",
    "two things approaching each other",
    "two things moving apart",
]
NUM_CLASSES = len(CLASS_NAMES)

#: (base, mirror) label pairs: a mirror-class video is a base-class video played backwards.
MIRROR_PAIRS: list[tuple[int, int]] = [(2 * k, 2 * k + 1) for k in range(NUM_CLASSES // 2)]

FRAME_TEMPLATE = "img_{:05d}.jpg"
SPLITS = ("train", "val")
_SPLIT_IDS = {"train": 0, "val": 1}
JPEG_QUALITY = 90
VIDEO_FPS = 12
MANIFEST = "dataset.json"
_PARTIAL_TAG = ".partial-"


def mirror_of(label: int) -> int:
    """The other class of ``label``'s mirror pair (same motion, time reversed)."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label {label} out of range [0, {NUM_CLASSES})")
    return label ^ 1


def video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of video ``index`` of ``split``.

    It depends only on ``(seed, split, index)``, so a dataset is identical
    whatever the number of worker processes.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_IDS[split], int(index)]))


# --------------------------------------------------------------------------- rendering
#
# Everything below works in float32 images with values in [0, 1], shape [H, W, 3].
# Object geometry is given as a signed distance (negative inside, in pixels); a
# 1-pixel soft edge turns it into a coverage map, which keeps sub-pixel motion visible.

# Shapes of moving objects. "kite" (an irregular triangle) has no rotational symmetry.
_SHAPES = ("circle", "triangle", "square", "pentagon", "hexagon", "bar", "kite")
# Shapes whose rotation is visible and unambiguous at the angular speeds used.
_ROTATING_SHAPES = ("triangle", "square", "bar", "kite", "pentagon")

# Exposure sub-samples for motion blur, as offsets in frames around the frame time.
# The set is symmetric, so blurring commutes with reversing time.
_BLUR_TAPS = 3


@dataclass(frozen=True)
class _Sprite:
    """A flat-coloured shape; its pose comes per time step."""

    shape: str
    colour: np.ndarray  # [3] float32 in [0, 1]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)``, each [H, W] float32 (x right, y down)."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(c, c, indexing="xy")


def _signed_distance(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float,
                     radius: float, angle: float) -> np.ndarray:
    """Approximate signed distance [H, W] (pixels, < 0 inside) of a posed shape.

    ``radius`` is the circumradius; ``angle`` (radians) rotates clockwise on screen.
    """
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - radius
    cos, sin = np.cos(angle), np.sin(angle)
    u = dx * cos + dy * sin  # coordinates in the shape's own frame
    v = -dx * sin + dy * cos
    if shape == "bar":
        return np.maximum(np.abs(u) - radius, np.abs(v) - 0.35 * radius)
    if shape == "kite":  # irregular triangle: vertices at 0, 140, 220 degrees
        verts = radius * np.array([[1.0, 0.0], [np.cos(2.44), np.sin(2.44)],
                                   [0.55 * np.cos(3.84), 0.55 * np.sin(3.84)]])
        return _convex_polygon_distance(u, v, verts)
    n = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[shape]
    apothem = radius * np.cos(np.pi / n)
    dist = np.full_like(u, -np.inf)
    for k in range(n):
        phi = (2 * k + 1) * np.pi / n
        dist = np.maximum(dist, u * np.cos(phi) + v * np.sin(phi) - apothem)
    return dist


def _convex_polygon_distance(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Max over edges of the signed distance to each edge's line; ``verts`` [N, 2] counter-clockwise."""
    dist = np.full_like(u, -np.inf)
    for i in range(len(verts)):
        (x0, y0), (x1, y1) = verts[i], verts[(i + 1) % len(verts)]
        ex, ey = x1 - x0, y1 - y0
        norm = np.hypot(ex, ey)
        nx, ny = ey / norm, -ex / norm  # outward normal for counter-clockwise order
        dist = np.maximum(dist, (u - x0) * nx + (v - y0) * ny)
    return dist


def _coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance (1-pixel soft edge)."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated random colour, [3] float32 in [0, 1]."""
    hue = rng.random()
    rgb = np.clip(np.abs(((hue * 6.0 + np.array([0.0, 4.0, 2.0])) % 6.0) - 3.0) - 1.0, 0.0, 1.0)
    sat = rng.uniform(0.55, 1.0)
    val = rng.uniform(0.75, 1.0)
    return (val * (1.0 - sat + sat * rgb)).astype(np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _background(rng: np.random.Generator, size: int, object_luma: float) -> np.ndarray:
    """A static textured background [H, W, 3] float32 contrasting with the objects.

    Low-frequency colour waves, a random high-frequency texture (stripes, checks
    or grain) and a few faint static blobs; no part of it moves.
    """
    x, y = _grid(size)
    # Grey level well away from the object luminance, so objects stay visible.
    if object_luma > 0.55 or (object_luma > 0.45 and rng.random() < 0.5):
        grey = rng.uniform(0.12, max(0.13, object_luma - 0.35))
    else:
        grey = rng.uniform(min(0.87, object_luma + 0.35), 0.88)
    tint = rng.normal(0.0, 0.05, size=3)
    img = np.broadcast_to(grey + tint, (size, size, 3)).astype(np.float32).copy()
    for _ in range(3):  # smooth colour waves, 0.5 - 2 cycles per frame
        freq = rng.uniform(0.5, 2.0) * 2 * np.pi / size
        theta = rng.uniform(0, 2 * np.pi)
        wave = np.sin(freq * (x * np.cos(theta) + y * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
        img += wave[..., None] * rng.uniform(0.01, 0.05, size=3).astype(np.float32)
    kind = rng.integers(3)
    amp = rng.uniform(0.02, 0.06)
    if kind == 0:  # stripes, 4 - 10 cycles per frame
        freq = rng.uniform(4.0, 10.0) * 2 * np.pi / size
        theta = rng.uniform(0, np.pi)
        tex = np.sign(np.sin(freq * (x * np.cos(theta) + y * np.sin(theta))))
    elif kind == 1:  # checks
        cell = rng.uniform(3.0, 8.0) * size / 64
        tex = np.where((np.floor(x / cell) + np.floor(y / cell)) % 2 == 0, 1.0, -1.0)
    else:  # grain
        tex = rng.normal(0.0, 1.0, size=(size, size))
    img += (amp * tex)[..., None].astype(np.float32)
    img += rng.normal(0.0, 0.015, size=img.shape).astype(np.float32)  # static grain
    for _ in range(rng.integers(0, 4)):  # faint static blobs (distractors that never move)
        shape = _SHAPES[rng.integers(len(_SHAPES))]
        sdf = _signed_distance(shape, x, y, rng.uniform(0, size), rng.uniform(0, size),
                               rng.uniform(0.06, 0.15) * size, rng.uniform(0, 2 * np.pi))
        img += _coverage(sdf)[..., None] * rng.normal(0.0, 0.06, size=3).astype(np.float32)
    return img


# A pose track maps continuous time (frames) to per-object poses (cx, cy, radius, angle, alpha).
_Pose = tuple[float, float, float, float, float]
_Track = Callable[[float], list[_Pose]]


def _window(rng: np.random.Generator, num_frames: int, lo: float, hi: float) -> tuple[float, float]:
    """A random ``(start, span)`` in frames, span a fraction in ``[lo, hi]`` of the clip.

    The window's position is symmetric about the middle of the clip in distribution,
    so reversed clips place it the same way.
    """
    last = max(num_frames - 1, 1)
    span = rng.uniform(lo, hi) * last
    return rng.uniform(0.0, last - span), span


def _ramp(t: float, start: float, span: float) -> float:
    """0 before ``start``, 1 after ``start + span``, linear in between."""
    return float(np.clip((t - start) / span, 0.0, 1.0))


def _track_translate(rng: np.random.Generator, size: int, num_frames: int,
                     direction: tuple[float, float]) -> tuple[list[str], _Track]:
    """One object moving in a straight line at constant speed along ``direction``."""
    radius = rng.uniform(0.09, 0.18) * size
    shape = _SHAPES[rng.integers(len(_SHAPES))]
    angle = rng.uniform(0, 2 * np.pi)
    path = rng.uniform(0.7, 1.4) * size  # travelled distance over the clip
    speed = path / max(num_frames - 1, 1)
    room = max(0.0, (size - 2 * radius - path) / 2)  # path fits inside: place it anywhere
    along_mid = size / 2 + rng.uniform(-room, room) + rng.uniform(-0.05, 0.05) * size
    across = rng.uniform(radius, size - radius)
    mid = (num_frames - 1) / 2
    dx, dy = direction

    def track(t: float) -> list[_Pose]:
        along = along_mid + speed * (t - mid)
        if dx != 0:
            return [(size / 2 + dx * (along - size / 2), across, radius, angle, 1.0)]
        return [(across, size / 2 + dy * (along - size / 2), radius, angle, 1.0)]

    return [shape], track


def _track_grow(rng: np.random.Generator, size: int, num_frames: int) -> tuple[list[str], _Track]:
    """One static object whose size grows linearly from small to large during a window."""
    r0 = rng.uniform(0.04, 0.08) * size
    r1 = rng.uniform(0.32, 0.45) * size
    cx, cy = rng.uniform(0.3, 0.7, size=2) * size
    shape = _SHAPES[rng.integers(len(_SHAPES))]
    angle = rng.uniform(0, 2 * np.pi)
    start, span = _window(rng, num_frames, 0.55, 0.85)
    return [shape], lambda t: [(cx, cy, r0 + (r1 - r0) * _ramp(t, start, span), angle, 1.0)]


def _track_rotate(rng: np.random.Generator, size: int, num_frames: int) -> tuple[list[str], _Track]:
    """One static object turning clockwise on screen at constant angular speed."""
    radius = rng.uniform(0.2, 0.32) * size
    cx, cy = rng.uniform(0.35, 0.65, size=2) * size
    shape = _ROTATING_SHAPES[rng.integers(len(_ROTATING_SHAPES))]
    angle0 = rng.uniform(0, 2 * np.pi)
    omega = np.deg2rad(rng.uniform(8.0, 15.0)) * 32 / max(num_frames, 8)  # radians per frame
    omega = min(omega, np.deg2rad(15.0))  # stays well below the pentagon's ambiguity (36 deg)
    return [shape], lambda t: [(cx, cy, radius, angle0 + omega * t, 1.0)]


def _track_fade(rng: np.random.Generator, size: int, num_frames: int) -> tuple[list[str], _Track]:
    """One static object whose opacity ramps from 0 to 1 over part of the clip.

    The ramp accelerates (opacity = s**2): a linear ramp played backwards would look
    the same within a few frames whose differences are taken unsigned (as PA does),
    while an accelerating fade-in reversed is a decelerating fade-out.
    """
    radius = rng.uniform(0.15, 0.28) * size
    cx, cy = rng.uniform(0.3, 0.7, size=2) * size
    shape = _SHAPES[rng.integers(len(_SHAPES))]
    angle = rng.uniform(0, 2 * np.pi)
    start, span = _window(rng, num_frames, 0.15, 0.35)

    def track(t: float) -> list[_Pose]:
        alpha = _ramp(t, start, span) ** 2
        return [(cx, cy, radius, angle, alpha)]

    return [shape], track


def _track_approach(rng: np.random.Generator, size: int, num_frames: int) -> tuple[list[str], _Track]:
    """Two objects moving towards each other along a random axis until they nearly touch."""
    radii = rng.uniform(0.08, 0.14, size=2) * size
    shapes = [_SHAPES[rng.integers(len(_SHAPES))] for _ in range(2)]
    angles = rng.uniform(0, 2 * np.pi, size=2)
    axis = rng.uniform(0, np.pi)
    ux, uy = np.cos(axis), np.sin(axis)
    mx, my = rng.uniform(0.4, 0.6, size=2) * size
    far = rng.uniform(0.75, 1.05) * size
    near = radii.sum() + rng.uniform(0.0, 0.06) * size
    start, span = _window(rng, num_frames, 0.5, 0.8)

    def track(t: float) -> list[_Pose]:
        half = (far + (near - far) * _ramp(t, start, span)) / 2
        return [(mx - ux * half, my - uy * half, radii[0], angles[0], 1.0),
                (mx + ux * half, my + uy * half, radii[1], angles[1], 1.0)]

    return shapes, track


def _base_track(pair: int, rng: np.random.Generator, size: int, num_frames: int) -> tuple[list[str], _Track]:
    if pair == 0:
        return _track_translate(rng, size, num_frames, (-1.0, 0.0))  # left
    if pair == 1:
        return _track_translate(rng, size, num_frames, (0.0, -1.0))  # up
    if pair == 2:
        return _track_grow(rng, size, num_frames)
    if pair == 3:
        return _track_rotate(rng, size, num_frames)
    if pair == 4:
        return _track_fade(rng, size, num_frames)
    if pair == 5:
        return _track_approach(rng, size, num_frames)
    raise ValueError(f"no pair {pair}")


def _render_base(pair: int, rng: np.random.Generator, size: int, num_frames: int) -> np.ndarray:
    """Render the base (first) class of mirror pair ``pair``; returns [T, H, W, 3] uint8."""
    shapes, track = _base_track(pair, rng, size, num_frames)
    sprites = [_Sprite(s, _random_colour(rng)) for s in shapes]
    object_luma = float(np.mean([_luma(s.colour) for s in sprites]))
    background = _background(rng, size, object_luma)
    exposure = rng.uniform(0.3, 0.8)  # fraction of the frame interval the shutter is open
    taps = (np.arange(_BLUR_TAPS) - (_BLUR_TAPS - 1) / 2) * exposure / max(_BLUR_TAPS - 1, 1)
    noise_sigma = rng.uniform(0.01, 0.025)
    x, y = _grid(size)
    out = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame = background.copy()
        # Motion blur: average the composited frame over symmetric sub-frame times.
        covers = [np.zeros((size, size), np.float32) for _ in sprites]
        for dt in taps:
            for i, pose in enumerate(track(t + dt)):
                cx, cy, radius, angle, alpha = pose
                if alpha > 0:
                    sdf = _signed_distance(sprites[i].shape, x, y, cx, cy, radius, angle)
                    covers[i] += alpha * _coverage(sdf)
        for sprite, cover in zip(sprites, covers):
            c = (cover / len(taps))[..., None]
            frame = frame * (1.0 - c) + sprite.colour * c
        frame += np.float32(noise_sigma) * rng.standard_normal(frame.shape, dtype=np.float32)  # sensor noise
        out[t] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def render_video(class_index: int, rng: np.random.Generator, size: int = 64,
                 num_frames: int = 32) -> np.ndarray:
    """Render one video of class ``class_index``.

    Args:
        class_index: label in ``[0, NUM_CLASSES)``.
        rng: source of all randomness (consumed identically for both classes of a pair).
        size: frame height and width in pixels.
        num_frames: number of frames ``T``.

    Returns:
        uint8 array ``[T, size, size, 3]`` (RGB). For the mirror class of a pair the
        result is exactly ``render_video(base, same_rng_state)[::-1]``.
    """
    if not 0 <= class_index < NUM_CLASSES:
        raise ValueError(f"class_index {class_index} out of range [0, {NUM_CLASSES})")
    if size < 8 or num_frames < 2:
        raise ValueError("need size >= 8 and num_frames >= 2")
    video = _render_base(class_index // 2, rng, size, num_frames)
    if class_index % 2 == 1:
        video = np.ascontiguousarray(video[::-1])
    return video


# --------------------------------------------------------------------------- writing


def video_codec() -> str:
    """The mp4 codec used for ``--videos``: ``libx264`` (H.264) when PyAV has it, else ``mpeg4``."""
    import av

    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - codec not compiled in
            continue
    raise RuntimeError("PyAV has neither libx264 nor mpeg4 encoders")


def write_mp4(path: Path, video: np.ndarray, fps: int = VIDEO_FPS) -> str:
    """Encode ``video`` [T, H, W, 3] uint8 (H, W even) to ``path``; returns the codec used."""
    import av

    codec = video_codec()
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        else:
            stream.bit_rate = 2_000_000
        stream.thread_count = 1
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return codec


@dataclass(frozen=True)
class _Job:
    root: str
    seed: int
    split: str
    index: int
    vid: str
    label: int
    size: int
    num_frames: int
    videos: bool


def _write_video(job: _Job) -> tuple[str, str, int, int]:
    """Render one video and write its JPEGs (and mp4); returns ``(split, vid, T, label)``."""
    from PIL import Image

    video = render_video(job.label, video_rng(job.seed, job.split, job.index), job.size, job.num_frames)
    folder = Path(job.root) / "frames" / job.vid
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(video):
        Image.fromarray(frame).save(folder / FRAME_TEMPLATE.format(t + 1), quality=JPEG_QUALITY)
    if job.videos:
        write_mp4(Path(job.root) / "videos" / f"{job.vid}.mp4", video)
    return job.split, job.vid, job.num_frames, job.label


def _jobs(root: Path, seed: int, size: int, num_frames: int, per_class: dict[str, int],
          videos: bool) -> list[_Job]:
    """All videos, numbered consecutively over train then val; labels cycle through the classes."""
    jobs: list[_Job] = []
    for split in SPLITS:
        for index in range(per_class[split] * NUM_CLASSES):
            vid = f"video_{len(jobs):06d}"
            jobs.append(_Job(str(root), seed, split, index, vid, index % NUM_CLASSES,
                             size, num_frames, videos))
    return jobs


def _config(seed: int, size: int, num_frames: int, train_per_class: int, val_per_class: int,
            videos: bool) -> dict[str, Any]:
    """The manifest minus nothing: everything that determines the dataset's bytes."""
    cfg: dict[str, Any] = {
        "generator": "tools/make_synthetic.py",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "size": int(size),
        "num_frames": int(num_frames),
        "train_per_class": int(train_per_class),
        "val_per_class": int(val_per_class),
        "num_videos": {"train": int(train_per_class) * NUM_CLASSES, "val": int(val_per_class) * NUM_CLASSES},
        "num_classes": NUM_CLASSES,
        "class_names": list(CLASS_NAMES),
        "mirror_pairs": [list(p) for p in MIRROR_PAIRS],
        "frame_template": FRAME_TEMPLATE,
        "jpeg_quality": JPEG_QUALITY,
        "videos": bool(videos),
    }
    if videos:
        cfg["video_codec"] = video_codec()
        cfg["video_fps"] = VIDEO_FPS
    return cfg


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed ``dataset.json`` of ``root``, or ``None`` if absent or unreadable."""
    try:
        with open(Path(root) / MANIFEST, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(root: str | os.PathLike[str], **expected: Any) -> bool:
    """True if ``root`` holds a finished dataset (its manifest and lists exist).

    Keyword arguments, if given, must match the manifest's entries (e.g. ``seed=0``,
    ``size=64``). Temporary ``.<name>.partial-*`` folders never count: they have no
    final name, and the manifest is written only just before the rename.
    """
    root = Path(root)
    if _PARTIAL_TAG in root.name:
        return False
    manifest = read_manifest(root)
    if manifest is None or manifest.get("generator") != "tools/make_synthetic.py":
        return False
    if any(manifest.get(k) != v for k, v in expected.items()):
        return False
    needed = ["category.txt", "train_list.txt", "val_list.txt"]
    if manifest.get("videos"):
        needed += ["train_videolist.txt", "val_videolist.txt"]
    return all((root / name).is_file() for name in needed)


def _remove_stale_partials(out: Path) -> None:
    """Delete ``.<name>.partial-<pid>-*`` siblings left by runs that are no longer alive."""
    prefix = f".{out.name}{_PARTIAL_TAG}"
    if not out.parent.is_dir():
        return
    for entry in out.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        try:
            pid = int(entry.name[len(prefix):].split("-", 1)[0])
            os.kill(pid, 0)
            continue  # still running: leave it alone
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        logger.info("removing stale partial dataset %s", entry)
        shutil.rmtree(entry, ignore_errors=True)


def _map(jobs: Sequence[_Job], workers: int) -> Iterator[tuple[str, str, int, int]]:
    if workers <= 1:
        yield from map(_write_video, jobs)
        return
    # spawn: safe even when the caller has already started threads (e.g. torch).
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_write_video, jobs, chunksize=8)


def generate(out: str | os.PathLike[str] = DEFAULT_OUT, seed: int = 0, size: int = 64,
             num_frames: int = 32, train_per_class: int = 50, val_per_class: int = 10,
             videos: bool = False, workers: int | None = None, force: bool = False,
             progress: bool = True) -> Path:
    """Write the dataset to ``out`` (atomically) and return its path.

    If ``out`` already holds a finished dataset with the same settings, nothing is
    done. If it holds anything else (another dataset, a foreign non-empty folder),
    :class:`FileExistsError` is raised unless ``force`` is true, in which case it is
    replaced once the new dataset is complete.

    The output is byte-identical for the same arguments, whatever ``workers`` is.
    """
    out = Path(out).absolute()
    if videos and size % 2:
        raise ValueError("--videos needs an even --size (yuv420p)")
    if train_per_class < 1 or val_per_class < 1:
        raise ValueError("need at least one video per class and split")
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    cfg = _config(seed, size, num_frames, train_per_class, val_per_class, videos)
    if out.exists():
        if read_manifest(out) == cfg and is_complete(out):
            logger.info("%s already holds this dataset (seed %d); nothing to do", out, seed)
            return out
        empty = out.is_dir() and not any(out.iterdir())
        if not force and not empty:
            raise FileExistsError(
                f"{out} exists and is not this dataset (different settings, or partial/foreign); "
                "pass --force to replace it")

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{_PARTIAL_TAG}{os.getpid()}-", dir=out.parent))
    try:
        (tmp / "frames").mkdir()
        if videos:
            (tmp / "videos").mkdir()
        jobs = _jobs(tmp, seed, size, num_frames, {"train": train_per_class, "val": val_per_class}, videos)
        logger.info("rendering %d videos (%dx%d, %d frames) into %s with %d worker(s)",
                    len(jobs), size, size, num_frames, tmp, workers)
        start = time.perf_counter()
        results = _map(jobs, workers)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(jobs), desc="videos", unit="vid",
                           disable=None, file=sys.stderr)
        rows: dict[str, list[tuple[str, int, int]]] = {s: [] for s in SPLITS}
        for split, vid, n, label in results:
            rows[split].append((vid, n, label))
        logger.info("rendered in %.1f s", time.perf_counter() - start)

        (tmp / "category.txt").write_text("".join(f"{c}\n" for c in CLASS_NAMES), encoding="utf-8")
        for split in SPLITS:
            (tmp / f"{split}_list.txt").write_text(
                "".join(f"frames/{vid} {n} {label}\n" for vid, n, label in rows[split]), encoding="utf-8")
            if videos:
                (tmp / f"{split}_videolist.txt").write_text(
                    "".join(f"videos/{vid}.mp4 {n} {label}\n" for vid, n, label in rows[split]),
                    encoding="utf-8")
        # The manifest goes last: its presence marks a finished dataset.
        (tmp / MANIFEST).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700

        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old is not None:
                os.rename(old, out)
                old = None
            if is_complete(out) and read_manifest(out) == cfg:  # a concurrent run won the race
                shutil.rmtree(tmp, ignore_errors=True)
                return out
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s (%d train / %d val videos)", out, len(rows["train"]), len(rows["val"]))
    return out


# --------------------------------------------------------------------------- command line


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``tools/make_synthetic.py``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--output_dir", dest="out", default=str(DEFAULT_OUT), help="output root")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (non-negative)")
    p.add_argument("--size", type=int, default=64, help="frame height and width")
    p.add_argument("--frames", type=int, default=32, help="frames per video")
    p.add_argument("--train-per-class", type=int, default=50, help="training videos per class")
    p.add_argument("--val-per-class", type=int, default=10, help="validation videos per class")
    p.add_argument("--videos", action="store_true", help="also write mp4 videos and *_videolist.txt")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--force", action="store_true", help="replace an existing different dataset")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return add_aliases(p, {"--out": "--output_dir"})


def main(args: argparse.Namespace) -> int:
    """Run the generator with parsed ``args``; returns the exit status."""
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="[make_synthetic] %(message)s")
    if args.seed < 0:
        logger.error("--seed must be non-negative")
        return 2
    try:
        generate(args.out, seed=args.seed, size=args.size, num_frames=args.frames,
                 train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                 videos=args.videos, workers=args.workers, force=args.force,
                 progress=not args.quiet)
    except (FileExistsError, ValueError) as e:
        logger.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
