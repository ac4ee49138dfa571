"""ops/video_reader.py as a unit: frame counts and seeking, on videos of several codecs and frame rates.

Each video is written here with PyAV; every frame shows its number in binary as eight
black or white bars (``bars(i)``), so a test can tell exactly which frame it got back.
The reader's documented contract (module docstring): frames are numbered from 0 in
decoding order; after a seek a number is recovered from the timestamp, which is the
same for constant-rate videos; for a variable-rate stream a number maps to the first
frame at or after its time.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ops.video_reader import SEEK_GAP, VideoReadError, count_frames, read_frames

N = 60  # frames per video: more than 2 * SEEK_GAP, so reads far apart seek
SIZE = (64, 48)


def bars(i: int) -> np.ndarray:
    """Frame ``i`` (0-based): bit b of ``i`` is bar b, 8 pixels wide, white when set (8x8 blocks: robust to coding)."""
    w, h = SIZE
    row = np.repeat([255 if i >> b & 1 else 0 for b in range(8)], w // 8).astype(np.uint8)
    return np.repeat(np.broadcast_to(row[None, :, None], (h, w, 1)), 3, axis=2).copy()


def number_of(frame: np.ndarray) -> int:
    """Inverse of :func:`bars` for a decoded frame."""
    w = SIZE[0] // 8
    return sum(1 << b for b in range(8) if frame[:, b * w + 2 : b * w + w - 2].mean() > 128)


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 -- any failure means: not in this PyAV build
        return False
    return True


def write_video(path: Path, codec: str, rate: Fraction, pts: list[int] | None = None,
                time_base: Fraction | None = None) -> Path:
    """``N`` frames (or ``len(pts)``), frame i (0-based) showing ``bars(i)``, a keyframe every 10.

    ``pts``: explicit timestamps in ``time_base`` units (a variable-rate video).
    """
    w, h = SIZE
    count = N if pts is None else len(pts)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.gop_size = 10
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        if codec == "libx264":
            stream.options = {"crf": "10", "bf": "0"}
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(bars(i), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def numbers(frames: list[np.ndarray]) -> list[int]:
    """0-based frame numbers of decoded frames."""
    return [number_of(f) for f in frames]


CONSTANT_RATE = [
    pytest.param("mpeg4", Fraction(25), "mp4", id="mpeg4-25fps-mp4"),
    pytest.param("mpeg4", Fraction(60), "mkv", id="mpeg4-60fps-mkv"),
    pytest.param("libx264", Fraction(30000, 1001), "mp4", id="h264-29.97fps-mp4",
                 marks=pytest.mark.skipif(not has_encoder("libx264"), reason="this PyAV build has no libx264")),
    pytest.param("mjpeg", Fraction(15), "avi", id="mjpeg-15fps-avi"),
]

# Out of order, repeated, near (decoded on) and far apart (seeked to), first and last frame.
INDICES = [45, 0, 1, 2, 30, 59, 5, 45, 31, 12]


def decoded_count(caplog) -> int:
    """Frames the last read decoded (the reader's debug line)."""
    return int(re.findall(r"decoded (\d+) frames for", caplog.text)[-1])


@pytest.mark.parametrize("codec, rate, ext", CONSTANT_RATE)
def test_constant_rate_video_counts_and_returns_exactly_the_frames_asked(tmp_path, caplog, codec, rate, ext):
    caplog.set_level(logging.DEBUG, logger="ops.video_reader")
    path = write_video(tmp_path / f"v.{ext}", codec, rate)
    assert count_frames(str(path), decode=True) == N
    assert count_frames(str(path)) == N  # the container's count where it has one, else decoded
    for seek in (True, False):
        assert numbers(read_frames(str(path), INDICES, seek=seek)) == INDICES, f"seek={seek}"
    assert numbers(read_frames(str(path), [N - 1])) == [N - 1]
    assert decoded_count(caplog) <= 10  # it seeked: from the last keyframe (one in 10), not from the start
    assert numbers(read_frames(str(path), [N - 1], seek=False)) == [N - 1]
    assert decoded_count(caplog) == N
    assert numbers(read_frames(str(path), [SEEK_GAP + 1, 2 * SEEK_GAP + 3])) == [SEEK_GAP + 1, 2 * SEEK_GAP + 3]


@pytest.mark.parametrize("codec, rate, ext", CONSTANT_RATE[:1])
def test_asking_past_the_last_frame_is_an_error_naming_the_count(tmp_path, codec, rate, ext):
    path = write_video(tmp_path / f"v.{ext}", codec, rate)
    for seek in (True, False):
        with pytest.raises(VideoReadError, match=f"video has {N} decodable frames but frame {N + 1} "):
            read_frames(str(path), [3, N], seek=seek)


def test_variable_rate_video_counts_every_frame_and_maps_far_numbers_to_their_time(tmp_path):
    # 1 ms time base; gaps of 20, 40 and 80 ms in an irregular pattern.
    gaps = [20, 40, 80, 20, 20, 40]
    pts = [0]
    for i in range(1, N):
        pts.append(pts[-1] + gaps[(i * 7) % len(gaps)])
    path = write_video(tmp_path / "vfr.mkv", "mpeg4", Fraction(25), pts=pts, time_base=Fraction(1, 1000))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        written = [f.pts for f in container.decode(stream)]
        tb, rate = stream.time_base, stream.average_rate
    assert len(set(np.diff(written))) > 1  # it is variable-rate indeed
    assert count_frames(str(path), decode=True) == N

    # Without seeking, numbers are positions in decoding order.
    assert numbers(read_frames(str(path), INDICES, seek=False)) == INDICES

    # A far number (reached by a seek) is the first frame at or after its time: number / average rate.
    def at_or_after(number: int) -> int:
        return next(j for j, p in enumerate(written) if round((p - written[0]) * tb * rate) >= number)

    far = [SEEK_GAP + 5, SEEK_GAP + 15]
    in_time = [n for n in far if round((written[-1] - written[0]) * tb * rate) >= n]
    assert in_time, "the test video is too short for a far read"
    expected = [at_or_after(n) for n in in_time]
    assert expected != in_time  # time and decoding order differ here: the check has teeth
    assert numbers(read_frames(str(path), in_time)) == expected
