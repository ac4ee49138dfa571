"""The LMDB frame store end to end: build it, check it, train from it, evaluate from it.

docs/DATA.md and the README promise that ``tools/build_lmdb.py`` + ``main.py --lmdb``
work with the same scripts as frame folders. Here the frame folders are moved away
once the store is built, so every frame the tools and the run read must come from
the store; the run must then equal, bit for bit, the same run on the folders.
(``test_models.py`` has no LMDB option; evaluation from the store is ``main.py
--evaluate --lmdb``.)
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import lmdb  # in requirements.txt: this path must run, never be skipped
import torch

from ops import lmdb_store
from ops.checkpoint_files import CKPT_NAME
from ops.lmdb_store import FrameStore
from tests.train_support import (
    make_tiny_dataset,
    read_steps,
    state_dict_of,
    train,
)
from tools import build_lmdb
from tools import check_data as check_data_tool

RUN = ("--epochs", "1", "--deterministic", "--lr_type", "cos")


def check_data(data: Path, *extra: str) -> list[str]:
    """``tools/check_data.py --full`` on both lists; returns the problems it reports."""
    return check_data_tool.main(check_data_tool.get_args_parser().parse_args(
        ["--root_path", str(data), "--list_file", "train_list.txt", "--list_file", "val_list.txt",
         "--num_class", "3", "--workers", "2", "--full", *extra]))


def test_lmdb_store_is_built_checked_trained_and_evaluated_like_the_frame_folders(tmp_path):
    data = make_tiny_dataset(tmp_path / "data")  # 8 train + 5 val videos of 6 frames
    store = tmp_path / "frames.lmdb"
    meta = build_lmdb.main(build_lmdb.get_args_parser().parse_args(
        ["--root_path", str(data), "--list_file", "train_list.txt", "--list_file", "val_list.txt",
         "--output", str(store), "--workers", "2"]))
    assert (meta["num_videos"], meta["num_frames"]) == (13, 13 * 6)

    folders = tmp_path / "folders"
    on_folders = train(data, folders, *RUN)

    # From here on the frames exist only in the store.
    shutil.move(str(data / "frames"), str(tmp_path / "frames_moved_away"))
    assert len(check_data(data)) == 13  # every folder is missing
    assert check_data(data, "--lmdb_path", str(store)) == []  # every frame decodes from the store

    from_store = tmp_path / "lmdb"
    on_store = train(data, from_store, *RUN, "--lmdb", str(store))
    assert read_steps(from_store / "log" / "run") == read_steps(folders / "log" / "run")  # 4 steps, exact floats
    assert len(read_steps(from_store / "log" / "run")) == 4
    a = state_dict_of(folders / "ckpt" / "run" / CKPT_NAME)
    b = state_dict_of(from_store / "ckpt" / "run" / CKPT_NAME)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert on_store["last"] == on_folders["last"] and on_store["last"]["count"] == 5

    evaluated = train(data, tmp_path / "eval", "--evaluate", "--resume", str(from_store / "ckpt" / "run" / CKPT_NAME),
                      "--lmdb", str(store))
    assert evaluated["last"] == on_folders["last"]  # validation read from the store: same loss, top-1, top-5


def test_threads_opening_one_store_at_once_share_one_environment(tmp_path, monkeypatch):
    """check_records reads a store from a thread pool: the first reads of several threads must open
    it once (LMDB refuses a second open of one store in a process: 'already open in this process')."""
    data = make_tiny_dataset(tmp_path / "data", n_train=1, n_val=1, frames=1)
    store = tmp_path / "frames.lmdb"
    build_lmdb.main(build_lmdb.get_args_parser().parse_args(
        ["--root_path", str(data), "--list_file", "train_list.txt", "--output", str(store), "--workers", "1"]))
    monkeypatch.setattr(lmdb_store, "_ENVS", {})  # as in a fresh process
    real_open, opens, second_open_done = lmdb.open, [], threading.Event()

    def open_held_back(*args, **kwargs):
        # The first open waits until a second one has completed: without mutual exclusion the
        # second thread opens meanwhile and the first open fails. (Mutually excluded, the second
        # thread never opens and the wait just runs out: the outcome does not depend on timing.)
        opens.append(threading.current_thread().name)
        if len(opens) == 1:
            second_open_done.wait(timeout=1)
            return real_open(*args, **kwargs)
        env = real_open(*args, **kwargs)
        second_open_done.set()
        return env

    monkeypatch.setattr(lmdb, "open", open_held_back)
    meta, errors = [], []

    def read_meta():
        try:
            meta.append(FrameStore(str(store)).meta()["num_frames"])
        except Exception as err:  # noqa: BLE001 -- reported by the assertion below
            errors.append(repr(err))

    threads = [threading.Thread(target=read_meta, name=f"reader{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and meta == [1, 1]
    assert len(opens) == 1  # one environment for the process, shared by the threads
