"""A frame store in LMDB, for file systems that choke on millions of small JPEGs.

Format (version ``pan-frames-v1``), one key per frame:

* key ``<path>/<frame name>`` in UTF-8, where ``<path>`` is the video's path
  exactly as written in the list file and ``<frame name>`` is the dataset's
  template applied to the 1-based frame number, e.g.
  ``abseiling/abc_000010_000020/img_00001.jpg``;
* value: the bytes of the JPEG file, unchanged (so decoding gives the same
  pixels as reading the folder);
* one extra key ``__pan_meta__`` holding JSON ``{"format": "pan-frames-v1",
  "image_tmpl": ..., "num_videos": ..., "num_frames": ...}``.

Built by ``tools/build_lmdb.py``. The ``lmdb`` package is optional; it is only
imported when a store is opened.
"""

from __future__ import annotations

import json
import os
import threading

from ops.errors import MissingFileError

META_KEY = b"__pan_meta__"
FORMAT = "pan-frames-v1"


def import_lmdb():
    """The ``lmdb`` module, or an ``ImportError`` telling how to get it."""
    try:
        import lmdb
    except ImportError:
        raise ImportError(
            "reading or building an LMDB frame store needs the optional package 'lmdb': "
            "pip install lmdb (or read frames from folders by leaving out --lmdb_path)"
        ) from None
    return lmdb


#: One read-only environment per store and process: LMDB refuses a second
#: open of the same store in one process, and a handle must not cross a fork.
_ENVS: dict[str, tuple[int, object]] = {}
#: Threads (check_records' pool) may open the same store at once: one opens, the others wait.
_ENVS_LOCK = threading.Lock()


def _new_lock_after_fork() -> None:
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()  # a fork while another thread held the lock must not inherit it held


os.register_at_fork(after_in_child=_new_lock_after_fork)


def _shared_env(path: str):
    with _ENVS_LOCK:
        return _shared_env_locked(path)


def _shared_env_locked(path: str):
    lmdb = import_lmdb()
    key = os.path.realpath(path)
    pid = os.getpid()
    entry = _ENVS.get(key)
    if entry is not None and entry[0] == pid:
        return entry[1]
    if entry is not None:
        # Inherited from the parent through fork: drop this process's copy of the
        # mapping (read-only, no lock file, so the parent is unaffected) and reopen.
        try:
            entry[1].close()
        except lmdb.Error:
            pass
    env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False,
                    subdir=os.path.isdir(path))
    _ENVS[key] = (pid, env)
    return env


def frame_key(video_path: str, image_tmpl: str, frame: int) -> bytes:
    """Key of 1-based frame ``frame`` of the video listed as ``video_path``."""
    return f"{video_path.rstrip('/')}/{image_tmpl.format(frame)}".encode("utf-8")


class FrameStore:
    """Read-only access to a store; the environment is opened lazily, once per
    process, so the store can be handed to DataLoader workers."""

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise MissingFileError(f"LMDB frame store {path} does not exist (build it with tools/build_lmdb.py)")
        import_lmdb()
        self.path = path

    def _open(self):
        return _shared_env(self.path)

    def meta(self) -> dict:
        """The store's metadata; ``ValueError`` when it is not a PAN frame store."""
        raw = self.get(META_KEY)
        if raw is None:
            raise ValueError(f"{self.path}: not a PAN frame store (no {META_KEY.decode()} key)")
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.path}: unsupported store format {meta.get('format')!r}, expected {FORMAT}")
        return meta

    def get(self, key: bytes) -> bytes | None:
        with self._open().begin(buffers=False) as txn:
            return txn.get(key)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        with self._open().begin(buffers=False) as txn:
            return [txn.get(k) for k in keys]
