"""Extract the frames of every video under a folder into frame folders, with PyAV.

No system ffmpeg is needed. Runs ``--workers`` processes, shows a progress
bar, and is resumable: a video's frames are written into ``<folder>.part`` and
renamed to ``<folder>`` only once complete, so an existing folder is always a
finished one (leftover ``.part`` folders are redone). Prints ``<folder>
<num_frames>`` for every video (also for those already done), so list files
can be written without rescanning; ``--counts_file`` saves the same lines.

Layouts (``--layout``):

* ``flat``     (default) ``dst/<video name>/`` for every video found;
* ``tree``     keeps the sub-folders of ``src`` (``dst/<class>/<video name>/``);
* ``somethingv2``  flat, ``.webm`` videos, frames ``{:06d}.jpg``;
* ``kinetics`` tree (class folders), frames ``img_{:05d}.jpg``; spaces in
  folder names become ``_`` (``air drumming/`` -> ``air_drumming/``), the
  folders ``tools/gen_label.py kinetics`` lists.

    python tools/vid2img.py /data/kinetics/videos_train /data/kinetics/frames \\
        --layout kinetics --short_side 331 --workers 16
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.frame_sources import VIDEO_EXTENSIONS as VIDEO_EXTS  # noqa: E402
from ops.transforms import scaled_size  # noqa: E402
from tools.gen_label import kinetics_class_folder  # noqa: E402

LAYOUTS = {
    "flat": {"tree": False, "image_tmpl": None, "exts": None},
    "tree": {"tree": True, "image_tmpl": None, "exts": None},
    "somethingv2": {"tree": False, "image_tmpl": "{:06d}.jpg", "exts": (".webm",)},
    "kinetics": {"tree": True, "image_tmpl": "img_{:05d}.jpg", "exts": None, "class_folder": kinetics_class_folder},
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Videos -> frame folders (PyAV).", formatter_class=HelpFormatter)
    p.add_argument("src", help="folder searched recursively for videos")
    p.add_argument("dst", help="folder receiving one frame folder per video")
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="flat")
    p.add_argument("--image_tmpl", help="frame file template (default: the layout's, else img_{:05d}.jpg)")
    p.add_argument("--ext", action="append", help="video extension(s) to take, e.g. --ext .webm (default: all common)")
    p.add_argument("--short_side", type=int, default=0, help="resize the shorter side to this (0: keep)")
    p.add_argument("--fps", type=float, default=0, help="resample to this frame rate (0: keep every frame)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--counts_file", help="also write '<folder> <num_frames>' lines here")
    return add_aliases(p)


def find_videos(src: str, exts: tuple[str, ...]) -> list[str]:
    """Video files under ``src`` (relative paths, sorted)."""
    out = []
    for dirpath, _, files in os.walk(src):
        for f in files:
            if f.lower().endswith(exts):
                out.append(os.path.relpath(os.path.join(dirpath, f), src))
    return sorted(out)


def frame_folder(rel_video: str, tree: bool, class_folder: Callable[[str], str] | None = None) -> str:
    """The frame folder of a video (relative to ``dst``); ``class_folder`` renames its parent folders."""
    stem = os.path.splitext(rel_video)[0]
    if not tree:
        return os.path.basename(stem)
    if class_folder is None:
        return stem
    *parents, name = stem.split(os.sep)
    return os.path.join(*[class_folder(p) for p in parents], name)


def extract(video: str, folder: str, image_tmpl: str, short_side: int = 0, fps: float = 0, quality: int = 95) -> int:
    """Write the frames of ``video`` into ``folder`` (created via ``folder.part``); returns the count.

    With ``fps``, keeps the first frame at or after each multiple of ``1/fps`` seconds.
    """
    part = folder + ".part"
    if os.path.exists(part):
        shutil.rmtree(part)
    os.makedirs(part)
    try:
        n = _write_frames(video, part, image_tmpl, short_side, fps, quality)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.rename(part, folder)
    return n


def _write_frames(video: str, part: str, image_tmpl: str, short_side: int, fps: float, quality: int) -> int:
    n = 0
    next_time = Fraction(0)
    step = Fraction(1) / Fraction(fps).limit_denominator(1000) if fps else None
    with av.open(video) as container:
        if not container.streams.video:
            raise ValueError(f"{video}: no video stream")
        stream = container.streams.video[0]
        start = stream.start_time or 0
        for i, frame in enumerate(container.decode(stream)):
            if step is not None:
                t = (frame.pts - start) * stream.time_base if frame.pts is not None else i / Fraction(stream.average_rate)
                if t < next_time:
                    continue
                while next_time <= t:
                    next_time += step
            img = frame.to_image()
            if short_side:
                size = scaled_size(img.size[0], img.size[1], short_side)
                if size != img.size:
                    img = img.resize(size, Image.BILINEAR)
            n += 1
            img.save(os.path.join(part, image_tmpl.format(n)), quality=quality)
    if n == 0:
        raise ValueError(f"{video}: no frame decoded")
    return n


def _job(args: tuple) -> tuple[str, int | None, str | None]:
    video, folder, rel_folder, tmpl, short_side, fps, quality = args
    try:
        return rel_folder, extract(video, folder, tmpl, short_side, fps, quality), None
    except (av.FFmpegError, OSError, ValueError) as e:
        return rel_folder, None, f"{video}: {e}"


def count_done(folder: str) -> int:
    return sum(1 for f in os.listdir(folder) if not f.startswith("."))


def main(args: argparse.Namespace) -> dict[str, int]:
    layout = LAYOUTS[args.layout]
    tmpl = args.image_tmpl or layout["image_tmpl"] or "img_{:05d}.jpg"
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in args.ext) if args.ext else (layout["exts"] or VIDEO_EXTS)
    if not os.path.isdir(args.src):
        raise SystemExit(f"source folder {args.src} does not exist")
    videos = find_videos(args.src, exts)
    counts: dict[str, int] = {}
    todo = []
    seen: dict[str, str] = {}
    for rel in videos:
        rel_folder = frame_folder(rel, layout["tree"], layout.get("class_folder"))
        if rel_folder in seen:
            raise SystemExit(f"videos {seen[rel_folder]} and {rel} map to the same folder {rel_folder}; use --layout tree")
        seen[rel_folder] = rel
        folder = os.path.join(args.dst, rel_folder)
        if os.path.isdir(folder):
            counts[rel_folder] = count_done(folder)
        else:
            todo.append((os.path.join(args.src, rel), folder, rel_folder, tmpl, args.short_side, args.fps, args.quality))
    failures = []
    if todo:
        with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
            futures = [pool.submit(_job, j) for j in todo]
            for fut in tqdm(as_completed(futures), total=len(futures), desc="videos", unit="video", file=sys.stderr):
                rel_folder, n, err = fut.result()
                if err:
                    failures.append(err)
                else:
                    counts[rel_folder] = n
    lines = [f"{f} {counts[f]}" for f in sorted(counts)]
    for line in lines:
        print(line)
    if args.counts_file:
        Path(args.counts_file).write_text("".join(line + "\n" for line in lines))
    print(f"{len(counts)} videos extracted ({len(videos) - len(todo)} were already done), "
          f"{len(failures)} failed", file=sys.stderr)
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    if failures:
        raise SystemExit(1)
    return counts


if __name__ == "__main__":
    main(get_args_parser().parse_args())
