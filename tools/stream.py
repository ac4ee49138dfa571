"""Live recognition with streaming PAN (:mod:`ops.streaming`): a video file, a folder of frames or a camera.

Frames go through the model one at a time; after every completed segment
(``m`` frames) the stream names the top-k classes of the last ``T`` segments
(a sliding window over the whole video). Outputs, in ``--output_dir``:

* ``stream.mp4``: the frames with the top-k classes and their confidence, and
  a small inset of the latest PA map (PA and Lite models);
* ``timeline.csv``: one row per step (segment): time, frame, top-k with
  confidence, the step's latency, frames dropped so far;
* ``summary.json``: frames read, processed and dropped, steps, fps, latency
  percentiles (per step and per frame), and how the source ended.

``--realtime`` paces the input at the source's frame rate and, when the model
falls behind, drops the frames that arrived meanwhile (counted), as a live
camera would. A camera (``--source /dev/video0``, PyAV's v4l2 input) is
always real time.

A video that breaks mid-stream (truncated file, decoding error) ends the run
cleanly: everything up to the last good frame is written (the mp4 closed and
playable, the CSV complete) and the message names the file and the frame. A
source that cannot be opened is refused before any output is created.

``--export_step FILE`` (``.pt2`` or ``.onnx``, repeatable) exports the
stream's segment step with its state as inputs and outputs instead, and checks
it against the eager stream (exit 1 beyond 1e-4 of the logit scale).

Examples::

    python tools/stream.py --weights run/ckpt.best.pth.tar --source video.mp4 --output_dir runs/stream
    python tools/stream.py --weights run/ckpt.best.pth.tar --source frames/video_1 --fps 12 --realtime
    python tools/stream.py --weights run/ckpt.best.pth.tar --source /dev/video0 --max_frames 500
    python tools/stream.py --weights run/ckpt.best.pth.tar --export_step step.pt2 --export_step step.onnx

Exit status: 0 done (also for a source that ended early, reported), 1 an
export's parity beyond tolerance, 2 unusable input.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.dataset_config import load_categories  # noqa: E402
from ops.errors import PanError  # noqa: E402
from ops.exported import MissingDependencyError  # noqa: E402
from ops.frame_sources import FolderSource, FrameSourceError, VideoFileSource, open_source  # noqa: E402
from ops.inference import load_checkpoint_model  # noqa: E402
from ops.streaming import STREAM_MODES, ExportedStep, StreamingPAN, export_step, step_parity  # noqa: E402
from ops.transforms import eval_transform  # noqa: E402
from ops.video_reader import check_frame_size  # noqa: E402
from ops.weights import CheckpointError  # noqa: E402

logger = logging.getLogger("stream")

#: Frame rate assumed for a folder of frames without --fps.
DEFAULT_FOLDER_FPS = 25.0
#: Shorter side of the annotated video: small frames are enlarged to it.
DISPLAY_SIZE = 256


class StreamSourceError(PanError, OSError):
    """A source that cannot be opened (named, with why); nothing has been written."""


# --------------------------------------------------------------------------- sources


class Source:
    """Frames of a video file, a frame folder or a camera, in order: ``uint8 [H, W, 3]`` RGB.

    Opening checks that the source can be read (:class:`StreamSourceError` otherwise). When the
    source breaks after that, iteration stops and :attr:`ended_early` says where and why.
    """

    def __init__(self, path: str, fps: float | None = None, image_tmpl: str | None = None) -> None:
        self.path = path
        self.ended_early: str | None = None
        self.live = path.startswith("/dev/video")
        self._container = None
        self._folder: FolderSource | None = None
        if self.live:
            self._open_av(path, format="v4l2")
        else:
            try:
                source = open_source(path, image_tmpl, video_extensions=None)
            except FrameSourceError as err:
                raise StreamSourceError(str(err)) from None
            if isinstance(source, VideoFileSource):
                self._open_av(path)
            elif isinstance(source, FolderSource):
                self._folder = source
                self.count = source.count()
                if self.count == 0:
                    raise StreamSourceError(f"{path}: no frames named {source.image_tmpl.format(1)} ... in this folder")
                self.rate = DEFAULT_FOLDER_FPS
            else:
                raise StreamSourceError(f"{path}: an LMDB store video; stream a video file, a frame folder or a camera")
        self.fps = float(fps or self.rate)

    def _open_av(self, path: str, format: str | None = None) -> None:
        import av

        what = "camera (PyAV v4l2 input)" if format else "video"
        try:
            self._container = av.open(path, format=format) if format else av.open(path)
        except Exception as err:  # noqa: BLE001 - any failure to open is the source's
            hint = " (is the camera connected, and is it readable by this user?)" if format else ""
            if not format and path.lower().endswith((".mp4", ".mov", ".m4v")):
                hint = " (an mp4 cut short before its index, which most writers put at the end, cannot be opened)"
            raise StreamSourceError(f"{path}: cannot open the {what}: {err}{hint}") from None
        if not self._container.streams.video:
            self._container.close()
            raise StreamSourceError(f"{path}: no video stream")
        stream = self._container.streams.video[0]
        too_big = check_frame_size(stream.codec_context.width or 0, stream.codec_context.height or 0)
        if too_big:
            self._container.close()
            raise StreamSourceError(f"{path}: {too_big}")
        self.rate = float(stream.average_rate or stream.guessed_rate or DEFAULT_FOLDER_FPS)
        self.count = int(stream.frames or 0)
        self._frames = self._container.decode(stream)
        try:  # the first frame proves the stream decodes, before any output exists
            self._first = next(self._frames).to_ndarray(format="rgb24")
        except StopIteration:
            self._container.close()
            raise StreamSourceError(f"{path}: the video has no frames") from None
        except Exception as err:  # noqa: BLE001
            self._container.close()
            raise StreamSourceError(f"{path}: cannot decode the first frame: {err}") from None

    def frames(self) -> Iterator[np.ndarray]:
        """The frames in order; stops at the end or at the first frame that cannot be read."""
        if self._folder is not None:
            for number in range(1, self.count + 1):
                try:
                    (image,) = self._folder.read([number])
                    yield np.asarray(image.convert("RGB"))
                except Exception as err:  # noqa: BLE001 - a bad frame ends the stream
                    self.ended_early = f"{self._folder.frame_name(number)}: frame {number} cannot be read ({err})"
                    return
            return
        yield self._first
        number = 1
        try:
            for frame in self._frames:
                number += 1
                yield frame.to_ndarray(format="rgb24")
        except Exception as err:  # noqa: BLE001 - FFmpeg or PyAV: the file breaks here
            self.ended_early = (f"{self.path}: decoding stopped at frame {number + 1} ({err}); "
                                f"the last good frame is frame {number}")
            return
        expected = self._expected_frames()
        if not self.live and expected and number < expected - 1:  # some containers just stop (AVI, MKV)
            self.ended_early = (f"{self.path}: the file announces {expected} frames but decoding stopped after "
                                f"frame {number} (truncated?); the last good frame is frame {number}")

    def _expected_frames(self) -> int:
        """Frames the container announces (its count, else duration x rate), 0 when it does not say."""
        stream = self._container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        if self._container.duration:
            return int(round(self._container.duration / 1e6 * self.rate))
        return 0

    def close(self) -> None:
        if self._container is not None:
            self._container.close()


# --------------------------------------------------------------------------- outputs


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


class AnnotatedVideo:
    """The annotated mp4: the frame (enlarged to :data:`DISPLAY_SIZE` when smaller), a panel with the
    top-k classes and their confidence bars, and the latest PA map as an inset. Closed on any exit,
    so a run that ends early still leaves a playable file."""

    def __init__(self, path: str, fps: float, height: int, width: int, topk: int) -> None:
        import av

        from tools.make_synthetic import video_codec

        scale = max(1.0, DISPLAY_SIZE / min(height, width))
        self.frame_size = (int(round(width * scale)) // 2 * 2, int(round(height * scale)) // 2 * 2)
        self.line = 18
        self.panel = self.line * (topk + 1) + 6
        self.size = (self.frame_size[0], self.frame_size[1] + self.panel)
        self.font = _font(13)
        self.container = av.open(path, mode="w")
        codec = video_codec()
        self.stream = self.container.add_stream(codec, rate=max(1, int(round(fps))))
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "23", "preset": "veryfast"}
        self.frames = 0

    def write(self, frame: np.ndarray, lines: list[tuple[str, float]], status: str, pa: np.ndarray | None) -> None:
        import av
        from PIL import Image, ImageDraw

        canvas = Image.new("RGB", self.size, (20, 20, 20))
        canvas.paste(Image.fromarray(frame).resize(self.frame_size, Image.BILINEAR), (0, 0))
        if pa is not None:
            side = max(32, self.frame_size[0] // 4)
            peak = float(pa.max())
            grey = (255 * pa / peak).astype(np.uint8) if peak > 0 else np.zeros_like(pa, dtype=np.uint8)
            inset = Image.fromarray(grey).resize((side, side), Image.NEAREST).convert("RGB")
            canvas.paste(inset, (self.frame_size[0] - side - 2, 2))
        draw = ImageDraw.Draw(canvas)
        top = self.frame_size[1] + 3
        draw.text((4, top), status, fill=(200, 200, 200), font=self.font)
        for i, (name, prob) in enumerate(lines):
            y = top + self.line * (i + 1)
            bar = int((self.size[0] - 8) * prob)
            draw.rectangle((4, y, 4 + bar, y + self.line - 4), fill=(40, 110, 60) if i == 0 else (60, 60, 90))
            draw.text((6, y), f"{prob * 100:5.1f}%  {name}", fill=(255, 255, 255), font=self.font)
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99 (and mean, max) of ``values`` in milliseconds."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "max": float(a.max())}


# --------------------------------------------------------------------------- the run


@dataclass
class Model:
    stream: StreamingPAN
    names: list[str]
    crop: int
    scale: int


def load_model(args: argparse.Namespace) -> Model:
    from tools.export import crop_and_scale

    model, _, checkpoint = load_checkpoint_model(args.weights)
    crop, scale = crop_and_scale(checkpoint, args.crop_size, args.scale_size)
    model.input_size = model.crop_size = crop
    stream = StreamingPAN(model, args.mode, args.stride)
    if args.categories:
        names = load_categories(args.categories)
        if len(names) != model.num_class:
            raise PanError(f"{args.categories} lists {len(names)} names but the model has {model.num_class} classes")
    else:
        names = [f"class {i}" for i in range(model.num_class)]
    return Model(stream, names, crop, scale)


def run_stream(args: argparse.Namespace) -> dict:
    """Stream ``args.source`` through the model; write the outputs; return the summary."""
    loaded = load_model(args)
    source = Source(args.source, args.fps, args.image_tmpl)  # refused here, before any output exists
    stream, names = loaded.stream, loaded.names
    model = stream.model
    transform = eval_transform(loaded.crop, loaded.scale, 1, False, model.input_mean, model.input_std)
    realtime = args.realtime or source.live
    os.makedirs(args.output_dir, exist_ok=True)
    video_path = os.path.join(args.output_dir, "stream.mp4")
    csv_path = os.path.join(args.output_dir, "timeline.csv")
    video: AnnotatedVideo | None = None
    topk = min(args.topk, model.num_class)
    step_times: list[float] = []
    frame_times: list[float] = []
    read = processed = dropped = steps = 0
    lines: list[tuple[str, float]] = []
    status = "warming up"
    pa_inset: np.ndarray | None = None
    start = time.perf_counter()
    period = 1.0 / source.fps
    interrupted = False
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        header = ["step", "segment", "frame", "time_s", "warm"]
        for k in range(1, topk + 1):
            header += [f"top{k}", f"top{k}_name", f"top{k}_prob"]
        writer.writerow(header + ["latency_ms", "frames_dropped"])
        try:
            for index, frame in enumerate(source.frames()):
                read += 1
                if args.max_frames and read > args.max_frames:
                    break
                if realtime:
                    due = index * period
                    now = time.perf_counter() - start
                    if now > due + period:  # a newer frame has arrived meanwhile: this one is gone
                        dropped += 1
                        continue
                    if now < due:
                        time.sleep(due - now)
                if video is None:
                    video = AnnotatedVideo(video_path, source.fps, frame.shape[0], frame.shape[1], topk)
                tick = time.perf_counter()
                x = transform([frame], None)
                out = stream.push_frame(x)
                elapsed = time.perf_counter() - tick
                frame_times.append(elapsed)
                processed += 1
                if out is not None:
                    step_times.append(elapsed)
                    if out.pa is not None:
                        pa_inset = out.pa[0, -1].numpy()
                    if out.logits is not None:
                        steps += 1
                        probs = torch.softmax(out.logits.reshape(-1, model.num_class)[-1].float(), dim=0)
                        values, classes = probs.topk(topk)
                        lines = [(names[int(c)], float(v)) for v, c in zip(values, classes)]
                        status = f"segment {out.segment + 1}" + ("" if out.warm else f" (warming up, {stream.num_segments} needed)")
                        row = [steps, out.segment, index + 1, f"{index / source.fps:.3f}", int(out.warm)]
                        for v, c in zip(values, classes):
                            row += [int(c), names[int(c)], f"{float(v):.4f}"]
                        writer.writerow(row + [f"{elapsed * 1000:.2f}", dropped])
                        f.flush()
                video.write(frame, lines, status, pa_inset)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if video is not None:
                video.close()
            source.close()
    wall = time.perf_counter() - start
    summary = {
        "source": args.source, "weights": args.weights, "mode": stream.mode, "stride": stream.stride,
        "segments_per_window": stream.num_segments, "frames_per_segment": stream.frames_per_segment,
        "crop_size": loaded.crop, "source_fps": source.fps, "realtime": realtime,
        "frames_read": read, "frames_processed": processed, "frames_dropped": dropped, "steps": steps,
        "wall_s": wall, "processed_fps": processed / wall if wall > 0 else None,
        "step_latency_ms": percentiles(step_times), "frame_latency_ms": percentiles(frame_times),
        "ended_early": source.ended_early, "interrupted": interrupted,
        "outputs": {"video": video_path if video is not None else None, "timeline": csv_path},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def format_summary(s: dict) -> str:
    lat, fl = s["step_latency_ms"], s["frame_latency_ms"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [
        f"{s['frames_processed']} of {s['frames_read']} frames processed, {s['frames_dropped']} dropped, "
        f"{s['steps']} steps ({s['mode']} mode) in {s['wall_s']:.1f} s: {fmt(s['processed_fps'])} fps "
        f"(source {s['source_fps']:g} fps{', real time' if s['realtime'] else ''})",
        f"per-step latency p50/p90/p99 {fmt(lat['p50'])}/{fmt(lat['p90'])}/{fmt(lat['p99'])} ms; "
        f"per-frame p50/p90/p99 {fmt(fl['p50'])}/{fmt(fl['p90'])}/{fmt(fl['p99'])} ms",
    ]
    if s["ended_early"]:
        lines.append(f"the source ended early: {s['ended_early']}; everything up to that frame is written")
    return "\n".join(lines)


def run_export(args: argparse.Namespace) -> int:
    from tools.export import synthetic_clips

    loaded = load_model(args)
    stream, crop = loaded.stream, loaded.crop
    from ops.files import file_sha256
    from ops.streaming import split_segments

    clips, described = synthetic_clips(stream.model, crop, loaded.scale, 1)
    segments = split_segments(clips, stream.frames_per_segment)
    segments = torch.cat((segments, segments.flip(0)))  # 2T segments: the ring wraps
    status = 0
    for path in args.export_step:
        start = time.perf_counter()
        export_step(stream, path, crop, crop, source=os.path.basename(args.weights),
                    source_sha256=file_sha256(args.weights), class_names=loaded.names)
        parity = step_parity(stream, ExportedStep(path), segments)
        logger.info("wrote %s (%.1f MB) in %.1f s; parity over %d steps on %s: max|diff| %.2e, %.2e of the logit "
                    "scale %.3g, top-1 %d/%d", path, os.path.getsize(path) / 1e6, time.perf_counter() - start,
                    parity.steps, described, parity.max_abs_diff, parity.max_rel_diff, parity.logit_scale,
                    parity.top1_agree, parity.steps)
        if not parity.max_rel_diff <= 1e-4 or parity.top1_agree < parity.steps:
            logger.error("%s: parity beyond tolerance (1e-4 of the logit scale, 100%% top-1)", path)
            status = 1
    return status


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Streaming PAN on a video file, a frame folder or a camera "
                                "(docs/DEPLOY.md).", formatter_class=HelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint of main.py (a one-way model streams online; "
                   "a two-way one in window mode)")
    p.add_argument("--source", help="video file, folder of frames (img_00001.jpg ...), or a camera device "
                   "(/dev/video0)")
    p.add_argument("--output_dir", default="runs/stream", help="folder for stream.mp4, timeline.csv, summary.json")
    p.add_argument("--mode", choices=("auto", *STREAM_MODES), default="auto",
                   help="online (one-way models), window (any model), auto: online when the model allows it")
    p.add_argument("--stride", type=int, default=1, help="window mode: segments between two predictions")
    p.add_argument("--topk", type=int, default=3, help="classes shown and written per step")
    p.add_argument("--categories", default=None, help="class names, one per line (default: class <n>)")
    p.add_argument("--image_tmpl", default=None, help="frame file names in a folder (default: img_{:05d}.jpg)")
    p.add_argument("--fps", type=float, default=None, help=f"frame rate of the source (default: the video's; "
                   f"{DEFAULT_FOLDER_FPS:g} for a folder)")
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=False,
                   help="pace the input at the frame rate, dropping frames when behind (a camera always is)")
    p.add_argument("--max_frames", type=int, default=0, help="stop after this many frames (0: all)")
    p.add_argument("--crop_size", type=int, default=None, help="default: the training run's")
    p.add_argument("--scale_size", type=int, default=None, help="default: the training run's")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--export_step", action="append", default=[], metavar="FILE",
                   help="export the segment step (.pt2 or .onnx, state in and out) instead of streaming; repeatable")
    return add_aliases(p)


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.export_step:
            return run_export(args)
        if not args.source:
            logger.error("give --source (a video file, a frame folder or /dev/videoN) or --export_step FILE")
            return 2
        summary = run_stream(args)
        print(format_summary(summary))
        if summary["ended_early"]:
            logger.warning("%s", summary["ended_early"])
        return 0
    except (PanError, CheckpointError, MissingDependencyError, FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(get_args_parser().parse_args()))
