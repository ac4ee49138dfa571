"""Reading chosen frames of a video file with PyAV (no system ffmpeg needed).

Frames are numbered from 0 here (the dataset converts its 1-based numbers).
A frame's number is its position in decoding order; when the reader seeks, it
recovers that number from the timestamp, ``round((pts - start) * time_base *
average_rate)``, which is the same thing for constant-frame-rate videos (what
``tools/vid2img.py`` and every dataset of the registry hold). For a
variable-rate stream a number maps to the first frame at or after its time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np

from ops.errors import PanError

logger = logging.getLogger(__name__)

#: Seek (to the keyframe before the target, then decode forward) only when the
#: next wanted frame is further than this; nearer ones are reached faster by decoding on.
SEEK_GAP = 24

#: Largest frame (width x height) that any reader decodes: frame images
#: (:mod:`ops.dataset`, LMDB stores) and video streams. 2**25 pixels holds 8K UHD
#: (7680 x 4320) and bounds one decoded RGB frame to 96 MiB; a header claiming
#: more is refused as a bad sample *before* decoding, so a corrupt or hostile
#: header cannot exhaust a worker's memory. (PIL's own limit is far higher: it
#: only warns up to 179 Mpx.) Larger sources: resize with ``tools/vid2img.py --short_side``.
MAX_FRAME_PIXELS = 2**25


def check_frame_size(width: int, height: int) -> str | None:
    """The reason a ``width x height`` frame is refused, or None when it is within :data:`MAX_FRAME_PIXELS`."""
    if width * height > MAX_FRAME_PIXELS:
        return (f"frame size {width}x{height} ({width * height} pixels) is above the limit of "
                f"{MAX_FRAME_PIXELS} pixels (ops.video_reader.MAX_FRAME_PIXELS); refused before decoding")
    return None


class VideoReadError(PanError, OSError):
    """A video could not be opened or decoded, or has fewer frames than asked."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _describe(err: BaseException) -> str:
    # FFmpeg's messages say what failed; for anything else the type is the useful part.
    return str(err) if isinstance(err, (av.FFmpegError, OSError)) else f"{type(err).__name__}: {err}"


def _open(path: str):
    try:
        container = av.open(path)
    except Exception as e:  # any failure of the demuxer on this file is the file's problem
        raise VideoReadError(path, f"cannot open video: {_describe(e)}") from None
    try:
        if not container.streams.video:
            raise VideoReadError(path, "no video stream")
        codec = container.streams.video[0].codec_context
        too_big = check_frame_size(codec.width or 0, codec.height or 0)
        if too_big:
            raise VideoReadError(path, too_big)
    except Exception as e:
        container.close()
        if isinstance(e, VideoReadError):
            raise
        raise VideoReadError(path, f"cannot read the video stream: {_describe(e)}") from None
    return container


def count_frames(path: str, decode: bool = False) -> int:
    """Number of frames of the first video stream.

    Uses the container's frame count when it has one and ``decode`` is False;
    otherwise decodes the whole stream (exact, slower).
    """
    container = _open(path)
    with container:
        stream = container.streams.video[0]
        if stream.frames and not decode:
            return int(stream.frames)
        n = 0
        try:
            for _ in container.decode(stream):
                n += 1
        except Exception as e:  # FFmpeg or PyAV, any kind: the file's problem
            raise VideoReadError(path, f"decoding failed after {n} frames: {_describe(e)}") from None
        return n


def read_frames(path: str, indices: Iterable[int], seek: bool = True) -> list[np.ndarray]:
    """Decode the frames numbered ``indices`` (0-based, any order, repeats allowed).

    Returns one ``uint8 [H, W, 3]`` RGB array per entry of ``indices``, in
    that order. Raises :class:`VideoReadError` when the video cannot be
    decoded or ends before the largest index.
    """
    indices = [int(i) for i in indices]
    if any(i < 0 for i in indices):
        raise ValueError(f"frame indices must be >= 0, got {min(indices)}")
    wanted = sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    container = _open(path)
    with container:
        stream = container.streams.video[0]
        rate, tb = stream.average_rate, stream.time_base
        start = stream.start_time if stream.start_time is not None else 0
        can_seek = bool(seek and rate and tb)
        k, last, decoded = 0, -1, 0
        frames = None
        by_pts = False  # after any seek, numbers come from timestamps
        just_seeked = False
        try:
            while k < len(wanted):
                target = wanted[k]
                if frames is None or (can_seek and target - last > SEEK_GAP):
                    if can_seek and target > SEEK_GAP:
                        pts = start + int(Fraction(target) / (Fraction(rate) * Fraction(tb)))
                        container.seek(pts, stream=stream, backward=True, any_frame=False)
                        by_pts, just_seeked = True, True
                    frames = container.decode(stream)
                exhausted = True
                for frame in frames:
                    decoded += 1
                    if by_pts:
                        if frame.pts is None:
                            raise VideoReadError(path, "frame without timestamp after a seek; read with seek=False")
                        idx = int(round(float((frame.pts - start) * tb * rate)))
                    else:
                        idx = last + 1
                    if just_seeked:
                        just_seeked = False
                        if idx > target:
                            # The container seeked past the target: restart from the
                            # beginning and never seek again in this file.
                            logger.debug("%s: seek overshot (frame %d for %d); decoding from start", path, idx, target)
                            container.seek(start, stream=stream, backward=True, any_frame=False)
                            can_seek, last = False, -1
                            frames = container.decode(stream)
                            exhausted = False
                            break
                    last = idx
                    if idx < wanted[k]:
                        continue
                    # A stream may change resolution mid-way; the header check alone is not enough.
                    too_big = check_frame_size(frame.width, frame.height)
                    if too_big:
                        raise VideoReadError(path, f"{too_big} (frame {idx + 1})")
                    arr = frame.to_ndarray(format="rgb24")
                    # A variable-rate stream may skip numbers: the frame at or after a time stands for it.
                    while k < len(wanted) and wanted[k] <= idx:
                        got[wanted[k]] = arr
                        k += 1
                    if k == len(wanted) or (can_seek and wanted[k] - idx > SEEK_GAP):
                        exhausted = False
                        break
                if exhausted:
                    break
        except VideoReadError:
            raise
        except Exception as e:  # FFmpeg, PyAV or numpy, any kind: the file's problem
            raise VideoReadError(path, f"decoding failed near frame {last + 1}: {_describe(e)}") from None
    if k < len(wanted):
        raise VideoReadError(
            path, f"video has {last + 1} decodable frames but frame {wanted[k] + 1} (1-based) was asked"
        )
    logger.debug("%s: decoded %d frames for %d wanted", path, decoded, len(wanted))
    return [got[i] for i in indices]
