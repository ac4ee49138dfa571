"""Hardening: files written atomically (checkpoints, ``args.json``, ``metrics.json``, ``scores.npz``)
get the permissions the umask gives, as ``log.txt`` does.

Before: the temporary-file API created them 0600 whatever the umask, so teammates on a
shared cluster could not read a run's checkpoints or results.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ops.checkpoint_files import CKPT_NAME, PREV_NAME, atomic_save
from ops.files import write_text_atomic
from tests.eval_support import make_dataset, run_eval, save_ours, tiny_model
from tests.train_support import make_tiny_dataset, train


@pytest.fixture
def umask():
    """Set a umask for the test (restored after)."""
    before = os.umask(0o022)
    os.umask(before)

    def set_to(value: int) -> int:
        os.umask(value)
        return value

    yield set_to
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o027, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mask):
    umask(mask)
    write_text_atomic(str(tmp_path / "args.json"), "{}\n")
    atomic_save({"state_dict": {}}, str(tmp_path / CKPT_NAME))
    with open(tmp_path / "plain.txt", "w") as f:  # what open() gives, as for log.txt
        f.write("x")
    for name in ("args.json", CKPT_NAME):
        assert mode(tmp_path / name) == 0o666 & ~mask == mode(tmp_path / "plain.txt"), name


def test_a_training_run_and_an_evaluation_leave_files_readable_as_the_umask_allows(tmp_path, umask):
    umask(0o027)  # group may read, others nothing: neither the old 0600 nor a default 0644
    data = make_tiny_dataset(tmp_path / "data", n_train=2, n_val=1)
    train(data, tmp_path, "--epochs", "2")
    run_dir, ckpt_dir = tmp_path / "log" / "run", tmp_path / "ckpt" / "run"
    assert mode(run_dir / "log.txt") == 0o640
    for path in (run_dir / "args.json", ckpt_dir / CKPT_NAME, ckpt_dir / PREV_NAME):
        assert mode(path) == 0o640, path
    root = make_dataset(tmp_path / "eval_data", 2)
    run_eval(root, save_ours(tmp_path / "rgb.pth.tar", tiny_model("RGB")), tmp_path / "eval")
    for name in ("args.json", "metrics.json", "scores.npz", "confusion_matrix.csv"):
        assert mode(tmp_path / "eval" / name) == 0o640, name
