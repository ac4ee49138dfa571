"""Frame sources: the frames of one video, from a frame folder, a video file or an LMDB store.

Every reader of frames (the dataset, the data check, the demo, a stream tool)
goes through one small interface, :class:`FrameSource`:

* ``count(decode=False)``: how many frames the source has;
* ``read(numbers)``: the frames numbered ``numbers`` (1-based, as list files
  number them; any order, repeats allowed and sharing one frame object);
* ``frame_name(number)``: the name of a frame for messages;
* ``check(num_frames, full)``: the problems of a source listed with
  ``num_frames`` frames, without raising (the data check's view).

Three implementations, the only places that know how each kind is stored:

* :class:`FolderSource`: a folder of image files named by a template
  (``img_{:05d}.jpg``);
* :class:`VideoFileSource`: a video file decoded with PyAV (:mod:`ops.video_reader`);
* :class:`LmdbSource`: one video of an LMDB frame store (:mod:`ops.lmdb_store`).

:func:`listed_source` gives the source of a list-file line (what the dataset
and the data check read); :func:`open_source` opens one from a path alone: a
frame folder, a video file (by its extension) or ``<store>/<video path>`` for
a video inside an LMDB store, and raises :class:`FrameSourceError` naming the
path when it is none of them.

Frames of image sources (folders, LMDB) are PIL images decoded lazily, so a
transform may choose a draft size; video frames are ``uint8 [H, W, 3]`` RGB
arrays. :func:`rgb_arrays` decodes either kind. Any failure to read or decode
a frame is a :class:`SampleLoadError` naming the frame (or the folder / video);
frames larger than :data:`ops.video_reader.MAX_FRAME_PIXELS` are refused from
their header, before decoding.
"""

from __future__ import annotations

import io
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ops.errors import PanError
from ops.jpeg_frames import EncodedJpeg, open_jpeg
from ops.lmdb_store import FrameStore, frame_key
from ops.video_reader import VideoReadError, check_frame_size, count_frames, read_frames

#: Frame file template of every registered dataset but the Something-Something ones.
DEFAULT_IMAGE_TMPL = "img_{:05d}.jpg"

#: Extensions :func:`open_source` takes for video files (lower case); also what
#: ``tools/vid2img.py`` looks for.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".flv", ".mpg", ".mpeg")

#: A frame as sources return it: a lazily decoded image, or a decoded RGB array.
Frame = Union[Image.Image, EncodedJpeg, np.ndarray]


class SampleLoadError(PanError, RuntimeError):
    """A frame or video of a sample could not be loaded; ``path`` names the file."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):
        # DataLoader workers pickle exceptions; keep both fields (and the class).
        return (type(self), (self.path, self.reason))


class SourceMissingError(SampleLoadError):
    """The frame folder or video file itself does not exist."""


class FrameSourceError(PanError, ValueError):
    """A path is not a frame source (frame folder, video file, video in an LMDB store); names the path."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


# ------------------------------------------------------------------ image bytes


def _describe(err: BaseException) -> str:
    # PIL's OSErrors say what failed; for anything else (DecompressionBombError,
    # struct.error, numpy errors) the type is the useful part.
    return str(err) if isinstance(err, (UnidentifiedImageError, OSError, SyntaxError)) else \
        f"{type(err).__name__}: {err}"


def _open_image_bytes(data: bytes | None, name: str) -> Image.Image | EncodedJpeg:
    """A lazily decoded image (so a transform may choose a draft size); header errors raise here.

    A colour JPEG comes back as an :class:`~ops.jpeg_frames.EncodedJpeg` (its header read by
    libjpeg-turbo, far cheaper than PIL's parser), anything else as a lazily opened PIL image.
    A header claiming more than :data:`~ops.video_reader.MAX_FRAME_PIXELS` is refused
    before anything is decoded.
    """
    if data is None:
        raise SampleLoadError(name, "missing frame")
    if len(data) == 0:
        raise SampleLoadError(name, "empty image file")
    jpeg = open_jpeg(data)
    if jpeg is not None:
        too_big = check_frame_size(*jpeg.size)
        if too_big:
            raise SampleLoadError(name, too_big)
        return jpeg
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        # PIL refuses (not as an OSError) before we can see the size; read it from the header ourselves.
        size = _header_size(data)
        reason = check_frame_size(*size) if size else None
        raise SampleLoadError(name, reason or "not a readable image: header claims a decompression bomb") from None
    except Exception as e:  # any failure of the decoder on these bytes is this frame's problem
        raise SampleLoadError(name, f"not a readable image: {_describe(e)}") from None
    too_big = check_frame_size(*img.size)
    if too_big:
        raise SampleLoadError(name, too_big)
    return img


_PIL_LIMIT_LOCK = threading.Lock()


def _header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from an image header, read with PIL's size limit lifted (nothing is decoded)."""
    # PIL has no per-call limit; the lock keeps concurrent checks (the data check's threads)
    # from restoring each other's lifted value. Other threads opening images meanwhile
    # still meet our own, lower, limit right after opening.
    with _PIL_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(io.BytesIO(data)) as img:
                return img.size
        except Exception:  # the caller reports the frame as unreadable without a size
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def decode_image_bytes(data: bytes | None, name: str) -> None:
    """Fully decode one frame's bytes; :class:`SampleLoadError` naming ``name`` on any failure."""
    img = _open_image_bytes(data, name)
    try:
        img.rgb() if isinstance(img, EncodedJpeg) else img.load()
    except Exception as e:  # see _open_image_bytes
        raise SampleLoadError(name, f"cannot decode image: {_describe(e)}") from None


def rgb_arrays(frames: Sequence[Frame], names: Sequence[str]) -> list[np.ndarray]:
    """Decoded ``uint8 [H, W, 3]`` RGB arrays of ``frames`` (``names``: one per frame, for messages).

    Frames that are one object (repeated numbers) are decoded once.
    """
    decoded: dict[int, np.ndarray] = {}
    out = []
    for img, name in zip(frames, names):
        if isinstance(img, np.ndarray):
            out.append(img)
            continue
        if id(img) not in decoded:
            try:
                decoded[id(img)] = img.rgb() if isinstance(img, EncodedJpeg) else np.asarray(img.convert("RGB"))
            except Exception as e:  # PIL or numpy, any kind: this frame's problem
                raise SampleLoadError(name, f"cannot decode image: {_describe(e)}") from None
        out.append(decoded[id(img)])
    return out


def _checked_numbers(num_frames: int, full: bool) -> list[int]:
    """Frames the data check looks at: all of them (``full``), else the first and the last."""
    return list(dict.fromkeys(range(1, num_frames + 1) if full else (1, num_frames)))


def _count_named(path: str, present, image_tmpl: str) -> int:
    """Frames ``1..n`` present by name (``present(number)``), numbered from 1 without gaps."""
    n = 0
    while present(n + 1):
        n += 1
    if n == 0:
        raise SampleLoadError(path, f"no frame named {image_tmpl.format(1)!r}; pass --image_tmpl if the frames "
                                    f"are named otherwise (e.g. '{{:05d}}.jpg')")
    if any(present(k) for k in range(n + 2, n + 10)):
        raise SampleLoadError(path, f"frame {image_tmpl.format(n + 1)} is missing but later frames exist")
    return n


# ------------------------------------------------------------------ the interface


class FrameSource(ABC):
    """The frames of one video. ``path`` names the source in messages."""

    path: str

    @abstractmethod
    def count(self, decode: bool = False) -> int:
        """Number of frames. Folders and stores count frames ``1..n`` present by name (a gap after
        ``n`` is an error); a video gives its container's count, or decodes the stream when ``decode``
        or when the container has none. :class:`SampleLoadError` when there is none to count."""

    @abstractmethod
    def read(self, numbers: Sequence[int]) -> list[Frame]:
        """The frames numbered ``numbers`` (1-based), in that order; :class:`SampleLoadError` naming the
        frame, folder or video on any failure (:class:`SourceMissingError` when the folder or video
        file itself is absent)."""

    @abstractmethod
    def frame_name(self, number: int) -> str:
        """The name of frame ``number`` (1-based) for messages."""

    @abstractmethod
    def check(self, num_frames: int, full: bool = False) -> list[tuple[str, str]]:
        """Problems ``(name, reason)`` of this source listed with ``num_frames`` frames, none raised.

        Quick: the folder exists with its first and last frame (non-empty), the store holds them,
        or the video opens with a video stream. ``full``: every frame exists and decodes, or the
        video decodes to at least ``num_frames`` frames.
        """

    def read_rgb(self, numbers: Sequence[int]) -> list[np.ndarray]:
        """:meth:`read`, decoded to ``uint8 [H, W, 3]`` RGB arrays."""
        return rgb_arrays(self.read(numbers), [self.frame_name(n) for n in numbers])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class FolderSource(FrameSource):
    """A folder of image files, frame ``n`` named ``image_tmpl.format(n)``."""

    def __init__(self, folder: str, image_tmpl: str = DEFAULT_IMAGE_TMPL):
        self.path = folder
        self.image_tmpl = image_tmpl

    def frame_name(self, number: int) -> str:
        return os.path.join(self.path, self.image_tmpl.format(int(number)))

    def _require_folder(self) -> None:
        if not os.path.isdir(self.path):
            raise SourceMissingError(self.path, "frame folder does not exist")

    def count(self, decode: bool = False) -> int:
        self._require_folder()
        names = set(os.listdir(self.path))
        return _count_named(self.path, lambda n: self.image_tmpl.format(n) in names, self.image_tmpl)

    def read(self, numbers: Sequence[int]) -> list[Frame]:
        self._require_folder()
        cache: dict[int, Frame] = {}
        for n in numbers:
            n = int(n)
            if n in cache:
                continue
            name = self.frame_name(n)
            try:
                with open(name, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                raise SampleLoadError(name, "missing frame") from None
            except OSError as e:
                raise SampleLoadError(name, f"cannot read frame: {e}") from None
            cache[n] = _open_image_bytes(data, name)
        return [cache[int(n)] for n in numbers]

    def check(self, num_frames: int, full: bool = False) -> list[tuple[str, str]]:
        if not os.path.isdir(self.path):
            return [(self.path, "frame folder does not exist")]
        problems = []
        for n in _checked_numbers(num_frames, full):
            name = self.frame_name(n)
            try:
                size = os.path.getsize(name)
            except OSError:
                problems.append((name, "missing frame"))
                continue
            if size == 0:
                problems.append((name, "empty image file"))
            elif full:
                try:
                    with open(name, "rb") as f:
                        data = f.read()
                    decode_image_bytes(data, name)
                except OSError as e:
                    problems.append((name, f"cannot read frame: {e}"))
                except SampleLoadError as e:
                    problems.append((name, e.reason))
        return problems


class VideoFileSource(FrameSource):
    """A video file, decoded with PyAV (:mod:`ops.video_reader`); frame ``n`` is the ``n``-th decoded."""

    def __init__(self, path: str):
        self.path = path

    def frame_name(self, number: int) -> str:
        return f"{self.path}#frame{int(number)}"

    def _require_file(self) -> None:
        if not os.path.isfile(self.path):
            raise SourceMissingError(self.path, "video file does not exist")

    def count(self, decode: bool = False) -> int:
        self._require_file()
        try:
            return count_frames(self.path, decode=decode)
        except VideoReadError as e:
            raise SampleLoadError(self.path, e.reason) from None

    def read(self, numbers: Sequence[int]) -> list[Frame]:
        self._require_file()
        try:
            return read_frames(self.path, [int(n) - 1 for n in numbers])
        except VideoReadError as e:
            raise SampleLoadError(self.path, e.reason) from None

    def check(self, num_frames: int, full: bool = False) -> list[tuple[str, str]]:
        if not os.path.isfile(self.path):
            return [(self.path, "video file does not exist")]
        try:
            n = count_frames(self.path, decode=full)
        except VideoReadError as e:
            return [(self.path, e.reason)]
        if full and n < num_frames:
            return [(self.path, f"video decodes to {n} frames, list says {num_frames}")]
        return []


class LmdbSource(FrameSource):
    """The frames of video ``video`` (its path as listed) in an LMDB frame store (:mod:`ops.lmdb_store`)."""

    def __init__(self, store: FrameStore, video: str, image_tmpl: str = DEFAULT_IMAGE_TMPL):
        self.store = store
        self.video = video
        self.image_tmpl = image_tmpl
        self.path = f"{store.path}:{video}"

    def key(self, number: int) -> bytes:
        return frame_key(self.video, self.image_tmpl, int(number))

    def frame_name(self, number: int) -> str:
        return f"{self.store.path}:{self.key(number).decode('utf-8')}"

    def count(self, decode: bool = False) -> int:
        cache: dict[int, bool] = {}

        def present(n: int) -> bool:
            if n not in cache:
                chunk = range(n, n + 64)
                datas = self.store.get_many([self.key(k) for k in chunk])
                cache.update((k, d is not None) for k, d in zip(chunk, datas))
            return cache[n]

        return _count_named(self.path, present, self.image_tmpl)

    def read(self, numbers: Sequence[int]) -> list[Frame]:
        keys = [self.key(n) for n in numbers]
        unique = list(dict.fromkeys(keys))
        datas = dict(zip(unique, self.store.get_many(unique)))
        cache: dict[bytes, Image.Image] = {}
        for k in unique:
            cache[k] = _open_image_bytes(datas[k], f"{self.store.path}:{k.decode('utf-8')}")
        return [cache[k] for k in keys]

    def check(self, num_frames: int, full: bool = False) -> list[tuple[str, str]]:
        keys = [self.key(n) for n in _checked_numbers(num_frames, full)]
        problems = []
        for k, d in zip(keys, self.store.get_many(keys)):
            name = f"{self.store.path}:{k.decode('utf-8')}"
            if not d:
                problems.append((name, "missing frame" if d is None else "empty frame"))
            elif full:
                try:
                    decode_image_bytes(d, name)
                except SampleLoadError as e:
                    problems.append((name, e.reason))
        return problems


# ------------------------------------------------------------------ opening


def listed_source(root_path: str, listed_path: str, image_tmpl: str = DEFAULT_IMAGE_TMPL, *,
                  video: bool = False, store: FrameStore | None = None) -> FrameSource:
    """The source of a list-file line whose path is ``listed_path`` (relative to ``root_path``):
    a video file (``video``), a video of ``store``, else a frame folder."""
    if video:
        return VideoFileSource(os.path.join(root_path, listed_path))
    if store is not None:
        return LmdbSource(store, listed_path, image_tmpl)
    return FolderSource(os.path.join(root_path, listed_path), image_tmpl)


def is_lmdb_store(path: str) -> bool:
    """Whether ``path`` is an LMDB store folder (as ``tools/build_lmdb.py`` writes them)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "data.mdb"))


def _store_above(path: str) -> str | None:
    p = os.path.normpath(path)
    while True:
        if is_lmdb_store(p):
            return p
        parent = os.path.dirname(p)
        if not parent or parent == p:
            return None
        p = parent


def open_source(path: str, image_tmpl: str | None = None, *,
                video_extensions: tuple[str, ...] | None = VIDEO_EXTENSIONS) -> FrameSource:
    """The frame source ``path`` names, from the path alone.

    * a folder: its frames, named by ``image_tmpl`` (default ``img_{:05d}.jpg``);
    * a file whose extension is in ``video_extensions`` (any file when None): a video;
    * ``<store>/<video path>``, ``<store>`` an LMDB frame store: that video of the store, its frames
      named by ``image_tmpl`` or else by the store's own template.

    Raises:
        FrameSourceError: the path is none of these (the message names it and what it is).
    """
    if os.path.isdir(path) and not is_lmdb_store(path):
        return FolderSource(path, image_tmpl or DEFAULT_IMAGE_TMPL)
    if os.path.isfile(path):
        if video_extensions is None or path.lower().endswith(tuple(video_extensions)):
            return VideoFileSource(path)
        raise FrameSourceError(path, f"not a frame folder, nor a video file (extensions {', '.join(video_extensions)})")
    root = _store_above(path)
    if root is None:
        raise FrameSourceError(path, "no such frame folder, video file or video in an LMDB frame store")
    if os.path.normpath(path) == root:
        raise FrameSourceError(path, f"an LMDB frame store, not one video: name a video inside it, "
                                     f"{os.path.join(path, '<video path as listed>')}")
    store = FrameStore(root)
    try:
        tmpl = image_tmpl or store.meta()["image_tmpl"]
    except (ValueError, KeyError) as e:
        raise FrameSourceError(path, f"cannot use LMDB store {root}: {e}") from None
    video = os.path.relpath(os.path.normpath(path), root).replace(os.sep, "/")
    source = LmdbSource(store, video, tmpl)
    if store.get(source.key(1)) is None:
        raise FrameSourceError(path, f"LMDB frame store {root} holds no video {video!r} "
                                     f"(no key {source.key(1).decode('utf-8')!r})")
    return source
