"""The TSN dataset: list files, frame folders / videos / LMDB, per-item randomness.

List format, one video per line: ``<path> <num_frames> <label>``, with
``<path>`` relative to the data root (a frame folder, or a video file when
``video=True``). Paths may contain spaces: a line is split from the right.
Frames are numbered from 1 and named by the dataset's template.

Each item reads ``new_length`` consecutive frames per segment (RGB 1, PA/Lite
``m``, see :mod:`ops.modalities`), staying on the last frame when the video
ends early. Every random choice of item ``i`` (sampling and augmentation)
comes from ``numpy.random.default_rng([seed, epoch, i])``, so an item is a
function of ``(seed, epoch, i)`` whatever the worker or the resume point.

Bad data stops with a message naming the list file and line, or the file:
:class:`ListFileError` for the list (every bad line at once),
:class:`SampleLoadError` for frames and videos. No frame is ever replaced by
another one. Every decoder failure of one sample, of any exception type (PIL,
PyAV, numpy), is a :class:`SampleLoadError` naming the file and the list line,
so the caller's bad-data policy applies to it; frames larger than
:data:`ops.video_reader.MAX_FRAME_PIXELS` are refused from their header,
before decoding. Frames are read through :mod:`ops.frame_sources` (one
source per list line: :meth:`TSNDataSet.source`), which also defines
:class:`SampleLoadError`.
"""

from __future__ import annotations

import codecs
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ops import frame_sampling
from ops.errors import PanError
from ops.frame_sources import (
    FrameSource,
    SampleLoadError,
    SourceMissingError,
    VideoFileSource,
    listed_source,
    rgb_arrays,
)
from ops.lmdb_store import FrameStore
from ops.transforms import ClipTransform, FrameDecodeError

logger = logging.getLogger(__name__)

MODES = ("train", "val", "test")


@dataclass(frozen=True)
class Problem:
    """One problem of the data, as the data check reports it.

    ``str()`` gives ``file:line: path: reason``, leaving out the parts that are None:
    ``file: reason`` for a whole list file, ``file:line: reason`` for a list line that
    does not parse, ``file:line: path: reason`` for a file a good line names.
    """

    list_file: str
    #: 1-based line in ``list_file``; None for the file as a whole.
    line: int | None
    #: The folder, video, frame or store entry concerned; None for the list line itself.
    path: str | None
    reason: str

    def __str__(self) -> str:
        where = self.list_file if self.line is None else f"{self.list_file}:{self.line}"
        return ": ".join(part for part in (where, self.path, self.reason) if part is not None)


class ListFileError(PanError, ValueError):
    """A list file has bad lines.

    ``details``: one :class:`Problem` per bad line (or one for the whole file);
    ``problems``: the same as ``file:line: reason`` strings; ``records``: the lines
    that parse, so that a checker can go on with their files.
    """

    def __init__(self, path: str, details: Sequence[Problem], records: Sequence[VideoRecord] = ()):
        self.path = path
        self.details = list(details)
        self.problems = [str(p) for p in self.details]
        self.records = list(records)
        super().__init__(f"{len(self.problems)} bad line(s) in list file {path}:\n" + "\n".join(self.problems))

    def __reduce__(self):
        return (ListFileError, (self.path, self.details, self.records))


@dataclass(frozen=True)
class VideoRecord:
    """One line of a list file."""

    path: str
    num_frames: int
    label: int
    #: 1-based line number in ``list_file``.
    line: int
    list_file: str = ""

    @property
    def where(self) -> str:
        """``file:line`` of the record, for messages."""
        return f"{self.list_file}:{self.line}"


def parse_list_line(line: str) -> tuple[str, int, int]:
    """Split ``<path> <num_frames> <label>`` from the right; ``ValueError`` with the reason."""
    parts = line.strip().rsplit(None, 2)
    if len(parts) != 3:
        raise ValueError(f"expected '<path> <num_frames> <label>', got {line.strip()!r}")
    path, n, label = parts
    try:
        n_int = int(n)
    except ValueError:
        raise ValueError(f"frame count {n!r} is not an integer") from None
    try:
        label_int = int(label)
    except ValueError:
        raise ValueError(f"label {label!r} is not an integer") from None
    return path, n_int, label_int


def parse_list_file(path: str, num_class: int | None = None) -> list[VideoRecord]:
    """Read a TSN list file; raises :class:`ListFileError` listing every bad line.

    The file is UTF-8, with or without a byte-order mark. Blank lines are
    skipped. A line is bad when it is not UTF-8 (its byte offset in the file is
    named), does not have three fields, its frame count is not an integer >= 1,
    or its label is not an integer in ``[0, num_class)`` (``>= 0`` when
    ``num_class`` is None).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ListFileError(path, [Problem(path, None, None, f"cannot read list file: {e}")]) from None
    records: list[VideoRecord] = []
    problems: list[Problem] = []
    offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    # Lines split as text mode does (\n, \r\n, \r); no UTF-8 sequence holds those bytes.
    for lineno, raw in enumerate(data[offset:].splitlines(keepends=True), 1):
        start, offset = offset, offset + len(raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(Problem(path, lineno, None, f"not UTF-8: byte 0x{raw[e.start]:02x} at byte offset "
                                                        f"{start + e.start} of the file; save the list as UTF-8"))
            continue
        if not line.strip():
            continue
        try:
            vpath, n, label = parse_list_line(line)
            if n < 1:
                raise ValueError(f"frame count {n} is < 1")
            if label < 0 or (num_class is not None and label >= num_class):
                bound = f"[0, {num_class})" if num_class is not None else ">= 0"
                raise ValueError(f"label {label} is outside {bound}")
        except ValueError as e:
            problems.append(Problem(path, lineno, None, str(e)))
            continue
        records.append(VideoRecord(vpath, n, label, lineno, path))
    if problems:
        raise ListFileError(path, problems, records)
    if not records:
        raise ListFileError(path, [Problem(path, None, None, "list file has no entries")])
    return records


def frame_numbers(offsets: np.ndarray, num_frames: int, new_length: int) -> np.ndarray:
    """1-based frame numbers read for 0-based segment ``offsets``: ``new_length`` consecutive
    frames from each, staying on the last frame of the video.

    Example: offsets ``[0, 8]``, 10 frames, new_length 4 -> ``[1, 2, 3, 4, 9, 10, 10, 10]``.

    Returns: int64 array of shape ``[len(offsets) * new_length]``.
    """
    starts = np.asarray(offsets, dtype=np.int64)[:, None] + 1
    return np.minimum(starts + np.arange(new_length, dtype=np.int64)[None, :], num_frames).reshape(-1)


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of all random choices for item ``index`` in ``epoch``."""
    return np.random.default_rng([seed, epoch, index])


class TSNDataSet(Dataset):
    """Clips of ``num_segments`` segments x ``new_length`` frames, with their labels.

    ``__getitem__(i)`` returns ``(x, label)``, ``x`` float ``[V * T * m * 3, H, W]``:
    ``V`` spatial x temporal views (test mode: crop-major, then temporal
    views; 1 otherwise), ``T = num_segments``, ``m = new_length``. Without a
    transform, ``x`` holds the full frames scaled to [0, 1].

    ``transform``: a :class:`ops.transforms.ClipTransform` (its ``apply`` is
    used, so flipped clips get their label mapped), or any callable
    ``(frames, rng) -> Tensor`` taking a list of PIL images / uint8 arrays.
    """

    def __init__(
        self,
        root_path: str,
        list_file: str,
        num_segments: int = 3,
        new_length: int = 1,
        image_tmpl: str = "img_{:05d}.jpg",
        transform: Callable | None = None,
        mode: str = "train",
        dense_sample: bool = False,
        twice_sample: bool = False,
        num_clips: int = 1,
        video: bool = False,
        num_class: int | None = None,
        seed: int = 0,
        lmdb_path: str | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if video and lmdb_path:
            raise ValueError("an LMDB frame store holds frames, not videos: use video=False with lmdb_path")
        if mode != "test" and (twice_sample or num_clips != 1):
            raise ValueError("twice_sample and num_clips apply to mode='test' only")
        self.root_path = root_path
        self.list_file = list_file
        self.num_segments = num_segments
        self.new_length = new_length
        self.image_tmpl = image_tmpl
        self.transform = transform
        self.mode = mode
        self.dense_sample = dense_sample
        self.twice_sample = twice_sample
        self.num_clips = num_clips
        self.video = video
        self.num_class = num_class
        self.seed = seed
        self.epoch = 0
        self.lmdb_path = lmdb_path
        self.store = FrameStore(lmdb_path) if lmdb_path else None
        if self.store is not None:
            store_tmpl = self.store.meta().get("image_tmpl")
            if store_tmpl != image_tmpl:
                raise ValueError(
                    f"LMDB store {lmdb_path} was built with image_tmpl {store_tmpl!r}, dataset uses {image_tmpl!r}"
                )
        self.num_views = frame_sampling.num_test_views(twice_sample, dense_sample, num_clips) if mode == "test" else 1
        self.records = parse_list_file(list_file, num_class)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose randomness ``__getitem__`` reproduces."""
        self.epoch = int(epoch)

    def offsets(self, record: VideoRecord, rng: np.random.Generator) -> np.ndarray:
        """0-based segment starts of ``record`` for this dataset's mode (all views concatenated)."""
        args = (record.num_frames, self.num_segments, self.new_length, rng)
        if self.mode == "test":
            return frame_sampling.test_offsets(*args, twice_sample=self.twice_sample,
                                         dense_sample=self.dense_sample, num_clips=self.num_clips)
        if self.dense_sample:
            # As published, validation with dense sampling also draws the window start.
            return frame_sampling.dense_train_offsets(*args)
        if self.mode == "train":
            return frame_sampling.train_offsets(*args)
        return frame_sampling.val_offsets(*args)

    def _full_path(self, record: VideoRecord) -> str:
        return os.path.join(self.root_path, record.path)

    def source(self, record: VideoRecord) -> FrameSource:
        """Where the frames of ``record`` are read from (frame folder, video file or LMDB store)."""
        return listed_source(self.root_path, record.path, self.image_tmpl, video=self.video, store=self.store)

    def load_frames(self, record: VideoRecord, numbers: np.ndarray) -> tuple[list, list[str]]:
        """Frames ``numbers`` (1-based) of ``record`` and a name per frame for messages."""
        source = self.source(record)
        try:
            frames = source.read(numbers)
        except SampleLoadError as e:
            # A video read that fails may be one listed with more frames than it has: say how many.
            listed = (f" with {record.num_frames} frames"
                      if isinstance(source, VideoFileSource) and not isinstance(e, SourceMissingError) else "")
            raise SampleLoadError(e.path, f"{e.reason} (listed at {record.where}{listed})") from None
        return frames, [source.frame_name(n) for n in numbers]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        rng = item_rng(self.seed, self.epoch, index)
        numbers = frame_numbers(self.offsets(record, rng), record.num_frames, self.new_length)
        frames, names = self.load_frames(record, numbers)
        label = record.label
        try:
            if self.transform is None:
                arrays = rgb_arrays(frames, names)
                x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)
                x = x.reshape(-1, *x.shape[-2:])
            elif isinstance(self.transform, ClipTransform):
                x, label = self.transform.apply(frames, rng, label)
            else:
                x = self.transform(frames, rng)
        except FrameDecodeError as e:
            raise SampleLoadError(names[e.frame_index], f"{e.reason} (listed at {record.where})") from None
        except SampleLoadError as e:
            if record.where in e.reason:
                raise
            raise SampleLoadError(e.path, f"{e.reason} (listed at {record.where})") from None
        except Exception as e:
            # The frames are decoded lazily inside the transform, so a decoder failure of any
            # type surfaces here; which frame is unknown, so the clip is named. (A bug in a
            # transform fails every sample and stops training at --max-bad-in-row, its type shown.)
            raise SampleLoadError(
                self._full_path(record),
                f"decoding or transforming the clip failed: {type(e).__name__}: {e} (listed at {record.where})",
            ) from None
        return x, label


# ------------------------------------------------------------------ checking
# The one data check: main.py --check-data and tools/check_data.py both call check_lists.

#: What the data check looks at beyond the list syntax (``--check-data`` of main.py).
CHECK_LEVELS = ("off", "quick", "full")


def record_problems(
    records: Sequence[VideoRecord],
    root_path: str,
    image_tmpl: str = "img_{:05d}.jpg",
    video: bool = False,
    workers: int = 8,
    *,
    check_frames: bool = False,
    lmdb_path: str | None = None,
) -> list[Problem]:
    """Check the files of every record in parallel (through :meth:`FrameSource.check`); all problems, in record order.

    Quick check: the folder exists with its first and last frame (non-empty),
    the store holds them, or the video opens with a video stream.
    ``check_frames``: every frame exists and decodes, or the video decodes to
    at least the listed count.
    """
    store = FrameStore(lmdb_path) if lmdb_path else None

    def check(record: VideoRecord) -> list[Problem]:
        source = listed_source(root_path, record.path, image_tmpl, video=video, store=store)
        return [Problem(record.list_file, record.line, name, reason)
                for name, reason in source.check(record.num_frames, check_frames)]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return [p for problems in pool.map(check, records) for p in problems]


def check_records(
    records: Sequence[VideoRecord],
    root_path: str,
    image_tmpl: str = "img_{:05d}.jpg",
    video: bool = False,
    workers: int = 8,
    *,
    check_frames: bool = False,
    lmdb_path: str | None = None,
) -> list[str]:
    """:func:`record_problems` as ``file:line: path: reason`` strings."""
    return [str(p) for p in record_problems(records, root_path, image_tmpl, video, workers,
                                            check_frames=check_frames, lmdb_path=lmdb_path)]


@dataclass
class DataCheck:
    """What :func:`check_lists` found."""

    problems: list[Problem]
    #: Videos whose files were checked.
    num_videos: int


def check_lists(
    list_files: Sequence[str],
    root_path: str,
    *,
    num_class: int | None = None,
    image_tmpl: str = "img_{:05d}.jpg",
    video: bool = False,
    lmdb_path: str | None = None,
    files: str = "quick",
    workers: int = 8,
    files_of_bad_lists: bool = True,
) -> DataCheck:
    """Parse every list file and check the files it names; every problem at once, list by list
    (its bad lines, then its files').

    ``files``: ``"off"`` checks only the lists' syntax and labels, ``"quick"`` and ``"full"``
    also the files (see :func:`record_problems`). ``files_of_bad_lists``: also check the files
    of the good lines of a list that has bad lines (``main.py``); ``tools/check_data.py`` does not.
    """
    if files not in CHECK_LEVELS:
        raise ValueError(f"files must be one of {CHECK_LEVELS}, got {files!r}")
    problems: list[Problem] = []
    num_videos = 0
    for list_file in list_files:
        try:
            records = parse_list_file(list_file, num_class)
        except ListFileError as err:
            problems.extend(err.details)
            records = err.records if files_of_bad_lists else []
        if files != "off" and records:
            problems.extend(record_problems(records, root_path, image_tmpl, video, workers,
                                            check_frames=files == "full", lmdb_path=lmdb_path))
            num_videos += len(records)
    return DataCheck(problems, num_videos)
