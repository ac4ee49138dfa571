"""One run per run folder: a lock file naming its holder, and how to tell whether a holder is alive.

A run takes ``run.lock`` in its log and checkpoint folders before it writes anything
there (``log.txt`` included) and removes it on exit. The file is created atomically
(written aside, then hard-linked into place, which fails when the name exists, also
on NFS) and holds JSON naming the holder::

    {"host": ..., "pid": ..., "boot_id": ..., "start_ticks": ..., "started": ..., "argv": [...]}

A second run finding the lock is refused with a message naming the holder, unless
the holder is provably dead: same host, and its pid is gone, or now belongs to a
process started at another time (pid reuse), or the host rebooted since. A lock
from another host cannot be checked from here; the message says so and how to
remove it by hand.

:func:`writer_tag` and :func:`writer_status` use the same identity for the
temporary files of checkpoint writes (:mod:`ops.checkpoint_files`), so that only
files of dead writers are ever cleaned up.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping

from ops.errors import PanError

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"


class RunLockError(PanError, RuntimeError):
    """The folder is held by another run (or its lock cannot be read or written)."""


def _host() -> str:
    return socket.gethostname()


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 of stat(5)
    except (IndexError, ValueError):
        return None


def _pid_exists(pid: int) -> bool:
    """Whether ``pid`` runs on this host; a zombie (killed, not yet reaped) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def this_process() -> dict:
    """The identity of this process as stored in a lock."""
    pid = os.getpid()
    return {"host": _host(), "pid": pid, "boot_id": _boot_id(), "start_ticks": _start_ticks(pid)}


def holder_is_dead(holder: Mapping) -> bool:
    """True only when ``holder`` (a lock's content) is provably not running; False when alive or unknown."""
    if holder.get("host") != _host():
        return False
    boot = _boot_id()
    if holder.get("boot_id") and boot and holder["boot_id"] != boot:
        return True
    try:
        pid = int(holder["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if not _pid_exists(pid):
        return True
    ticks = holder.get("start_ticks")
    now = _start_ticks(pid)
    return ticks is not None and now is not None and int(ticks) != now


def writer_tag() -> str:
    """``<pid>@<host>``: put into temporary file names so their writer can be checked later."""
    return f"{os.getpid()}@{_host()}"


def writer_status(tag: str) -> str:
    """``"dead"``, ``"alive"`` or ``"unknown"`` (another host, or not a tag) for a :func:`writer_tag`."""
    pid, sep, host = tag.partition("@")
    if not sep or not pid.isdigit() or host != _host():
        return "unknown"
    return "alive" if _pid_exists(int(pid)) else "dead"


def describe(holder: Mapping) -> str:
    argv = " ".join(str(a) for a in holder.get("argv") or [])
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started', '?')}"
            + (f" ({argv})" if argv else ""))


class RunLock:
    """The locks of one run on its folders; :meth:`release` (also run at exit) removes them."""

    def __init__(self, paths: list[str], content: dict):
        self.paths = paths
        self._content = content
        atexit.register(self.release)

    @classmethod
    def acquire(cls, folders: Iterable[str]) -> "RunLock":
        """Lock every folder (the same folder given twice is locked once).

        Raises :class:`RunLockError` naming the holder when a folder is held by a live
        run or one that cannot be checked (another host); no lock is kept then.
        """
        content = {**this_process(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": list(sys.argv)}
        paths: list[str] = []
        for folder in folders:
            path = os.path.join(folder, LOCK_NAME)
            if any(os.path.realpath(path) == os.path.realpath(p) for p in paths):
                continue
            try:
                os.makedirs(folder, exist_ok=True)
                _take(path, content)
            except OSError as err:
                for taken in paths:
                    _remove_if_ours(taken, content)
                raise RunLockError(f"cannot take the run lock {path}: {err}") from None
            except BaseException:
                for taken in paths:
                    _remove_if_ours(taken, content)
                raise
            paths.append(path)
        return cls(paths, content)

    def release(self) -> None:
        """Remove the locks this run holds (a lock since taken over by another run is left alone)."""
        for path in self.paths:
            _remove_if_ours(path, self._content)
        self.paths = []
        atexit.unregister(self.release)


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise RunLockError(f"cannot read the run lock {path} ({err}); if no run uses this folder, "
                           f"delete the file") from None


def _take(path: str, content: dict) -> None:
    aside = f"{path}.{os.getpid()}.new"
    with open(aside, "w", encoding="utf-8") as f:
        json.dump(content, f)
        f.flush()
        os.fsync(f.fileno())
    try:
        for _ in range(3):  # a stale lock removed, then a new attempt; more means a race with other starts
            try:
                os.link(aside, path)  # atomic, and fails when the lock exists
                return
            except FileExistsError:
                pass
            holder = _read(path)
            if holder is None:
                continue  # released meanwhile
            if not holder_is_dead(holder):
                where = "" if holder.get("host") == _host() else (
                    " It runs on another host, so it cannot be checked from here;")
                raise RunLockError(
                    f"run folder {os.path.dirname(path)} is in use by another run: {describe(holder)}.{where} "
                    f"Wait for it to end, or give this run another --store_name. If that run is certainly "
                    f"dead, delete {path}."
                )
            _break_stale(path, holder)
        raise RunLockError(f"could not take the run lock {path}: other runs keep taking it")
    finally:
        os.remove(aside)


def _break_stale(path: str, holder: dict) -> None:
    """Remove a dead holder's lock, unless another run replaced it meanwhile."""
    grabbed = f"{path}.{os.getpid()}.stale"
    try:
        os.replace(path, grabbed)
    except FileNotFoundError:
        return
    with open(grabbed, encoding="utf-8") as f:
        try:
            taken = json.load(f)
        except ValueError:
            taken = None
    if taken != holder:
        # A live run took the lock between our read and the rename: put its lock back.
        try:
            os.link(grabbed, path)
        except FileExistsError:
            pass
    else:
        logger.warning("removed the stale run lock %s of a run that is no longer running: %s", path,
                       describe(holder))
    os.remove(grabbed)


def _remove_if_ours(path: str, content: dict) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            current = json.load(f)
    except (OSError, ValueError):
        return
    if current == content:
        os.remove(path)
