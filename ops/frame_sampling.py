"""Frame sampling rules of TSN/TSM, as pure functions.

Every function takes the frame count of a video, the number of segments, the
number of consecutive frames read per segment (``new_length``: 1 for RGB, ``m``
for PA/Lite, see :mod:`ops.modalities`) and a ``numpy.random.Generator``, and
returns the **0-based** start frame of each segment as an ``int64`` array.
Frames on disk are numbered from 1, so the dataset reads frame ``offset + 1``
and the ``new_length - 1`` frames after it (staying on the last frame when the
video ends early).

The rules are those of the published TSN/TSM loaders; the only departure is
that videos shorter than ``new_length`` frames no longer produce a negative
range (the published code crashes or returns negative offsets there): such
videos are sampled as if they had ``new_length`` frames, i.e. from frame 1.
"""

from __future__ import annotations

import numpy as np

#: Length, in frames, of the I3D-style window used by dense sampling.
DENSE_WINDOW = 64
#: Number of evenly spaced windows that dense sampling evaluates at test time.
DENSE_TEST_STARTS = 10


def _check(num_frames: int, num_segments: int, new_length: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if new_length < 1:
        raise ValueError(f"new_length must be >= 1, got {new_length}")


def _span(num_frames: int, new_length: int) -> int:
    """Number of valid start frames (at least 1, see the module docstring)."""
    return max(num_frames - new_length + 1, 1)


def _centres(span: int, num_segments: int, phase: float = 0.5) -> np.ndarray:
    # Same float expression as the published loader (int(tick / 2.0 + tick * x)),
    # so offsets are bit-identical to it for phase 0.5.
    tick = span / float(num_segments)
    return np.array(
        [int(tick * phase + tick * x) for x in range(num_segments)], dtype=np.int64
    )


def train_offsets(
    num_frames: int, num_segments: int, new_length: int, rng: np.random.Generator
) -> np.ndarray:
    """TSN training offsets: one random start inside each of ``num_segments`` equal spans.

    When the video is too short for a span of at least one frame per segment,
    the starts are drawn at random over the whole video and sorted; when it has
    no more frames than segments, every segment starts at frame 1.

    Example: ``train_offsets(30, 3, 1, rng)`` returns e.g. ``[4, 17, 21]``:
    one value in each of ``[0, 10)``, ``[10, 20)``, ``[20, 30)``.

    Returns: int64 array of shape ``[num_segments]``.
    """
    _check(num_frames, num_segments, new_length)
    span = _span(num_frames, new_length)
    average_duration = span // num_segments
    if average_duration > 0:
        return (
            np.arange(num_segments, dtype=np.int64) * average_duration
            + rng.integers(0, average_duration, size=num_segments)
        ).astype(np.int64)
    if num_frames > num_segments:
        return np.sort(rng.integers(0, span, size=num_segments)).astype(np.int64)
    return np.zeros(num_segments, dtype=np.int64)


def val_offsets(
    num_frames: int, num_segments: int, new_length: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """TSN validation offsets: the centre of each of ``num_segments`` equal spans.

    Deterministic (``rng`` is accepted for a uniform signature and unused).
    Videos with no more than ``num_segments + new_length - 1`` frames start
    every segment at frame 1, as published.

    Example: ``val_offsets(30, 3, 1)`` returns ``[5, 15, 25]``.

    Returns: int64 array of shape ``[num_segments]``.
    """
    _check(num_frames, num_segments, new_length)
    if num_frames > num_segments + new_length - 1:
        return _centres(_span(num_frames, new_length), num_segments)
    return np.zeros(num_segments, dtype=np.int64)


def _dense_window(num_frames: int, num_segments: int, start: int) -> np.ndarray:
    stride = DENSE_WINDOW // num_segments
    return (
        (np.arange(num_segments, dtype=np.int64) * stride + start) % num_frames
    ).astype(np.int64)


def _dense_positions(num_frames: int) -> int:
    return max(1, 1 + num_frames - DENSE_WINDOW)


def dense_train_offsets(
    num_frames: int, num_segments: int, new_length: int, rng: np.random.Generator
) -> np.ndarray:
    """I3D-style dense offsets: ``num_segments`` frames with stride ``64 // num_segments``
    inside a 64-frame window that starts at a random frame.

    Positions past the end of a short video wrap around (modulo the frame
    count), as published. The random start is drawn from
    ``[0, num_frames - 64)``, which is the published range (its upper end is
    never drawn).

    Example: ``dense_train_offsets(100, 8, 1, rng)`` with a drawn start of 10
    returns ``[10, 18, 26, 34, 42, 50, 58, 66]``.

    Returns: int64 array of shape ``[num_segments]``.
    """
    _check(num_frames, num_segments, new_length)
    positions = _dense_positions(num_frames)
    start = 0 if positions == 1 else int(rng.integers(0, positions - 1))
    return _dense_window(num_frames, num_segments, start)


def num_test_views(twice_sample: bool = False, dense_sample: bool = False, num_clips: int = 1) -> int:
    """Number of temporal views that :func:`test_offsets` returns for these options."""
    _check_test_options(twice_sample, dense_sample, num_clips)
    if dense_sample:
        return DENSE_TEST_STARTS if num_clips == 1 else num_clips
    if twice_sample:
        return 2
    return num_clips


def _check_test_options(twice_sample: bool, dense_sample: bool, num_clips: int) -> None:
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if twice_sample and dense_sample:
        raise ValueError("twice_sample and dense_sample are exclusive; choose one")
    if twice_sample and num_clips != 1:
        raise ValueError("twice_sample already gives 2 views; it cannot be combined with num_clips > 1")


def test_offsets(
    num_frames: int,
    num_segments: int,
    new_length: int,
    rng: np.random.Generator | None = None,
    *,
    twice_sample: bool = False,
    dense_sample: bool = False,
    num_clips: int = 1,
) -> np.ndarray:
    """Test-time offsets of every temporal view, concatenated view after view.

    * default: the centre of each span (same as :func:`val_offsets` for
      ``num_clips=1``, but without the short-video special case, as published);
      with ``num_clips = n > 1`` the n views are shifted by ``1/n`` of a span:
      view ``k`` takes the point at ``(2k + 1) / (2n)`` of each span.
    * ``twice_sample``: the centres, then the span starts (2 views).
    * ``dense_sample``: the dense window (see :func:`dense_train_offsets`) at 10
      evenly spaced starts over ``[0, num_frames - 64]`` (``num_clips`` starts
      when ``num_clips > 1``).

    Deterministic (``rng`` is accepted for a uniform signature and unused).

    Example: ``test_offsets(30, 3, 1, twice_sample=True)`` returns
    ``[5, 15, 25, 0, 10, 20]``; ``test_offsets(30, 3, 1, num_clips=2)`` returns
    ``[2, 12, 22, 7, 17, 27]``.

    Returns: int64 array of shape ``[V * num_segments]`` with ``V`` given by
    :func:`num_test_views`.
    """
    _check(num_frames, num_segments, new_length)
    _check_test_options(twice_sample, dense_sample, num_clips)
    if dense_sample:
        num_starts = DENSE_TEST_STARTS if num_clips == 1 else num_clips
        starts = np.linspace(0, _dense_positions(num_frames) - 1, num=num_starts, dtype=int)
        return np.concatenate(
            [_dense_window(num_frames, num_segments, int(s)) for s in starts]
        )
    span = _span(num_frames, new_length)
    if twice_sample:
        return np.concatenate([_centres(span, num_segments), _centres(span, num_segments, 0.0)])
    if num_clips == 1:
        return _centres(span, num_segments)
    return np.concatenate(
        [_centres(span, num_segments, (2 * k + 1) / (2 * num_clips)) for k in range(num_clips)]
    )


# pytest would otherwise collect ``test_offsets`` as a test when a test module imports it.
test_offsets.__test__ = False  # type: ignore[attr-defined]
