"""Files written safely: atomic replacement, writability probes, temporary-file hygiene, hashes.

The one home of the project's file-level rules, used for checkpoints
(:mod:`ops.checkpoint_files`), run folders, evaluation outputs, pictures and the
tools:

* :func:`atomic_write` replaces a file through a temporary sibling that is
  ``fsync``-ed and renamed, then ``fsync``-s the folder: a crash leaves the old
  file or the new one, never a mix. Temporary names carry their writer
  (``.<name>.<pid>@<host>.<random>.tmp``) so :func:`remove_stale_temps` removes
  only those of writers that are provably dead; files are created with mode
  0666 less the umask, as ``open()`` does.
* :func:`check_writable` proves a folder writable before any work is done.
* :func:`file_sha256` hashes a file's bytes.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from typing import BinaryIO

from ops.errors import PanError
from ops.run_lock import writer_status, writer_tag

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
#: A temporary file whose writer cannot be checked (another host, or a name from before
#: writer tags) counts as stale once unmodified this long: a live save writes without pause.
STALE_TEMP_SECONDS = 3600
#: Test-only hook. When this environment variable names a file, :func:`atomic_write`,
#: once the temporary file is complete and ``fsync``-ed and before the rename,
#: writes the temporary file's path into that file and then waits (until killed).
#: It exists so that the SIGKILL tests can kill a writer at a known point of a
#: save instead of guessing one by timing. Nothing in the project sets it;
#: unset, it costs one environment lookup per file written.
PAUSE_BEFORE_RENAME_ENV = "PAN_TEST_PAUSE_BEFORE_RENAME"


def fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_pattern(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder or ".", f".{glob.escape(name)}.*{TMP_SUFFIX}")


def _temp_writer(tmp: str, path: str) -> str:
    """The ``<pid>@<host>`` in a temporary file's name (``.<name>.<tag>.<random>.tmp``), or ''."""
    middle = os.path.basename(tmp)[len(os.path.basename(path)) + 2: -len(TMP_SUFFIX)]
    return middle.rsplit(".", 1)[0] if "@" in middle else ""


def remove_stale_temps(path: str) -> list[str]:
    """Delete temporary files that killed writers of ``path`` left behind; returns their names.

    A file is removed when its writer (named in the file name) is provably dead: same
    host, pid gone. One whose writer cannot be checked (another host, an old name) is
    removed only after :data:`STALE_TEMP_SECONDS` without a change. A live writer's
    file -- another run in the same folder, another thread -- is never touched.
    """
    removed = []
    for tmp in glob.glob(_temp_pattern(path)):
        status = writer_status(_temp_writer(tmp, path))
        try:
            if status == "alive" or (status == "unknown" and
                                     time.time() - os.path.getmtime(tmp) < STALE_TEMP_SECONDS):
                continue
            os.remove(tmp)
            removed.append(tmp)
        except FileNotFoundError:
            pass
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted save: %s", len(removed), ", ".join(removed))
    return removed


def _pause_for_a_kill_if_asked(tmp: str) -> None:
    """The :data:`PAUSE_BEFORE_RENAME_ENV` hook (tests only): report ``tmp``, then wait to be killed."""
    marker = os.environ.get(PAUSE_BEFORE_RENAME_ENV)
    if not marker:
        return
    with open(marker + ".part", "w") as f:
        f.write(tmp)
    os.replace(marker + ".part", marker)  # the marker appears complete
    while True:
        time.sleep(1)


def _create_temp(folder: str, prefix: str) -> tuple[int, str]:
    """A new file ``<folder>/<prefix><random>.tmp``, opened for writing (``O_EXCL``).

    Created with mode 0666 less the umask, as ``open()`` creates ``log.txt``: the
    renamed file keeps it, so teammates read checkpoints and results as the umask
    allows (``tempfile.mkstemp`` would make every one 0600).
    """
    while True:
        tmp = os.path.join(folder, f"{prefix}{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write(path: str, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, atomically and durably.

    The data go to a temporary sibling (``.<name>.<pid>@<host>.<random>.tmp``, so that
    :func:`remove_stale_temps` can tell a live writer's file), which is
    flushed, ``fsync``-ed and renamed over ``path``; then the folder is
    ``fsync``-ed. On any failure the temporary file is removed and ``path``
    is untouched.
    """
    folder = os.path.dirname(path) or "."
    fd, tmp = _create_temp(folder, f".{os.path.basename(path)}.{writer_tag()}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _pause_for_a_kill_if_asked(tmp)
        os.replace(tmp, path)
        fsync_dir(folder)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Create or replace ``path`` with ``text`` (UTF-8) through :func:`atomic_write`."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (used to recognise the list file a run was trained on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class OutputFolderError(PanError, RuntimeError):
    """An output folder that cannot be created or written; the message names the flag and the folder."""


def check_writable(folder: str, what: str) -> None:
    """Create ``folder`` if needed and prove it writable with a synced probe file.

    Raises :class:`OutputFolderError` naming ``what`` (the flag) and the folder.
    """
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as err:
        raise OutputFolderError(f"{what} folder {folder} is not writable: {err}") from None
