"""Hardening: a run folder is owned by one run at a time, and a live run's temporary files are never removed.

Before: a second ``main.py`` on the same folders appended to the first run's ``log.txt`` and,
at its first save, deleted the first run's in-progress temporary checkpoint as "stale".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import main
from ops.checkpoint_files import CKPT_NAME, read_verified_checkpoint
from ops.files import PAUSE_BEFORE_RENAME_ENV, STALE_TEMP_SECONDS, remove_stale_temps
from ops.run_folder import RunFolderInUse, lock_run_folders
from ops.run_lock import LOCK_NAME, this_process
from tests.helpers import REPO
from tests.train_support import make_tiny_dataset, train, train_argv  # noqa: F401

#: A first run that stops inside its first checkpoint save, the temporary file complete and
#: not yet renamed, and waits there (the test kills it): a run in progress, caught mid-save.
FIRST_RUN = """
import os, sys
import main
from ops import checkpoint_files, files
real_atomic_save = checkpoint_files.atomic_save
def pausing(obj, path):
    os.environ[files.PAUSE_BEFORE_RENAME_ENV] = sys.argv[1]
    return real_atomic_save(obj, path)
checkpoint_files.atomic_save = pausing
sys.exit(main.cli(sys.argv[2:]))
"""


def start_first_run(data: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """Start the first run; returns it once it is paused mid-save, and its temporary checkpoint."""
    marker = out / "first_run_paused"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop(PAUSE_BEFORE_RENAME_ENV, None)
    proc = subprocess.Popen([sys.executable, "-c", FIRST_RUN, str(marker), *train_argv(data, out, "--epochs", "1")],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120  # a guard against a hang, not a timing condition
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the first run ended (status {proc.returncode}) before its save:\n{proc.stderr.read()}")
        assert time.monotonic() < deadline, "the first run never reached its save"
        time.sleep(0.05)
    return proc, Path(marker.read_text())


def test_second_run_is_refused_naming_the_first_and_leaves_its_files_alone(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=4, n_val=2)
    first, temp = start_first_run(data, tmp_path)
    log = tmp_path / "log" / "run" / "log.txt"
    try:
        assert temp.exists() and temp.parent == tmp_path / "ckpt" / "run"
        log_before = log.read_text()
        with pytest.raises(RunFolderInUse) as err:
            train(data, tmp_path, "--epochs", "1")
        message = str(err.value)
        assert f"pid {first.pid} on host {socket.gethostname()}" in message and "--store_name" in message
        assert temp.exists(), "the live run's temporary checkpoint was removed"
        assert log.read_text() == log_before, "the refused run wrote into the first run's log.txt"
        assert main.cli(train_argv(data, tmp_path, "--epochs", "1")) == 1  # one message, no traceback
        assert log.read_text() == log_before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The first run is dead: its lock is stale and replaced, its temporary file removed at the next save.
    train(data, tmp_path, "--epochs", "1", "--resume", "auto")
    assert not temp.exists()
    assert read_verified_checkpoint(str(tmp_path / "ckpt" / "run" / CKPT_NAME))["epoch"] == 1
    assert not (tmp_path / "log" / "run" / LOCK_NAME).exists() and not (tmp_path / "ckpt" / "run" / LOCK_NAME).exists()


def write_lock(folder: Path, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({**this_process(), "started": "then", "argv": ["main.py"], **fields}))


def test_lock_of_another_host_is_refused_saying_it_cannot_be_checked(tmp_path):
    write_lock(tmp_path / "run", host="node-17.cluster", pid=4242)
    with pytest.raises(RunFolderInUse, match=r"pid 4242 on host node-17\.cluster.*another host.*delete .*run\.lock"):
        lock_run_folders(str(tmp_path / "run"))


def test_lock_of_a_dead_or_reused_pid_is_replaced_and_released_on_exit(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(tmp_path / "a", pid=dead.pid, start_ticks=None)
    # pid reuse: a live pid (the test's parent) whose process started at another time than the lock says.
    write_lock(tmp_path / "b", pid=os.getppid(), start_ticks=-1)
    lock = lock_run_folders(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a"))
    for folder in ("a", "b"):
        assert json.loads((tmp_path / folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    with pytest.raises(RunFolderInUse, match=f"pid {os.getpid()}"):
        lock_run_folders(str(tmp_path / "b"))
    lock.release()
    assert not (tmp_path / "a" / LOCK_NAME).exists() and not (tmp_path / "b" / LOCK_NAME).exists()


def test_a_refused_second_folder_releases_the_first(tmp_path):
    write_lock(tmp_path / "ckpt", host="elsewhere")
    with pytest.raises(RunFolderInUse):
        lock_run_folders(str(tmp_path / "log"), str(tmp_path / "ckpt"))
    assert not (tmp_path / "log" / LOCK_NAME).exists()


def test_a_run_that_fails_releases_its_lock(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=2, n_val=1)
    (data / "val_list.txt").write_text("frames/ghost 6 0\n")
    with pytest.raises(main.DataCheckError):
        train(data, tmp_path)
    assert not (tmp_path / "log" / "run" / LOCK_NAME).exists() and not (tmp_path / "ckpt" / "run" / LOCK_NAME).exists()


def test_only_temporary_files_of_dead_writers_are_removed(tmp_path):
    path = tmp_path / CKPT_NAME
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = tmp_path / f".{CKPT_NAME}.{os.getppid()}@{host}.0a1b2c3d.tmp"
    gone = tmp_path / f".{CKPT_NAME}.{dead.pid}@{host}.0a1b2c3d.tmp"
    remote = tmp_path / f".{CKPT_NAME}.77@node-17.cluster.0a1b2c3d.tmp"
    old_remote = tmp_path / f".{CKPT_NAME}.78@node-17.cluster.0a1b2c3d.tmp"
    untagged = tmp_path / f".{CKPT_NAME}.k2j4h1x9.tmp"  # named before writer tags
    for f in (live, gone, remote, old_remote, untagged):
        f.write_bytes(b"partial")
    hours_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(old_remote, (hours_ago, hours_ago))
    os.utime(untagged, (hours_ago, hours_ago))
    assert sorted(remove_stale_temps(str(path))) == sorted(str(f) for f in (gone, old_remote, untagged))
    assert live.exists() and remote.exists()
