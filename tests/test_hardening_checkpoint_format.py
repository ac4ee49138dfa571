"""Hardening: a checkpoint's ``format_version`` is read. A newer version is refused with a clear
message (it is not "corrupt", and ``--resume auto`` does not fall back past it); older ones load.

Before: the field was written but never read, so a newer checkpoint with fields this code does
not know resumed silently, and the next save dropped those fields.
"""

from __future__ import annotations

import pytest

from ops.checkpoint_files import (
    CKPT_NAME,
    FORMAT_VERSION,
    PREV_NAME,
    CheckpointVersionError,
    atomic_save,
    read_verified_checkpoint,
    resolve_resume,
)
from tests.train_support import make_tiny_dataset, train


def rewrite(path, **changes):
    """Re-save ``path`` with ``changes`` (``None`` removes a field), with a matching content hash."""
    ckpt = read_verified_checkpoint(str(path))
    ckpt.pop("content_sha256")
    for key, value in changes.items():
        if value is None:
            ckpt.pop(key, None)
        else:
            ckpt[key] = value
    atomic_save(ckpt, str(path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder after one epoch: ckpt.pth.tar and ckpt.prev.pth.tar of this code's format."""
    tmp = tmp_path_factory.mktemp("run")
    data = make_tiny_dataset(tmp / "data", n_train=2, n_val=1)
    train(data, tmp, "--epochs", "2", "--eval-freq", "2")
    return data, tmp


def test_a_newer_format_is_refused_by_every_reader_and_not_taken_for_corrupt(trained, tmp_path):
    data, out = trained
    folder = out / "ckpt" / "run"
    rewrite(folder / CKPT_NAME, format_version=FORMAT_VERSION + 1, field_of_the_future={"keep": 1})
    newer = (folder / CKPT_NAME).read_bytes()
    with pytest.raises(CheckpointVersionError, match=rf"{folder / CKPT_NAME}.*format version {FORMAT_VERSION + 1}"
                                                      rf".*up to {FORMAT_VERSION}.*newer"):
        read_verified_checkpoint(str(folder / CKPT_NAME))
    with pytest.raises(CheckpointVersionError):
        resolve_resume("auto", str(folder))  # not moved aside as corrupt, no fallback to the older file
    with pytest.raises(CheckpointVersionError, match="newer"):
        train(data, out, "--epochs", "3", "--eval-freq", "2", "--resume", "auto")
    assert (folder / CKPT_NAME).read_bytes() == newer, "the newer checkpoint was changed"
    assert not (folder / (CKPT_NAME + ".corrupt")).exists()
    assert read_verified_checkpoint(str(folder / PREV_NAME))["format_version"] == FORMAT_VERSION


def test_older_formats_still_load_and_resume(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=2, n_val=1)
    train(data, tmp_path, "--epochs", "1")
    folder = tmp_path / "ckpt" / "run"
    rewrite(folder / CKPT_NAME, format_version=None)  # as written before the field existed
    assert "format_version" not in read_verified_checkpoint(str(folder / CKPT_NAME))
    train(data, tmp_path, "--epochs", "2", "--resume", "auto")
    assert read_verified_checkpoint(str(folder / CKPT_NAME))["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize("bad", ["2", 1.5, True, -1])
def test_an_unreadable_format_version_is_named(tmp_path, bad):
    from ops.weights import CheckpointError

    path = tmp_path / "x.pth.tar"
    atomic_save({"format_version": bad, "state_dict": {}}, str(path))
    with pytest.raises(CheckpointError, match=rf"{path}.*format_version"):
        read_verified_checkpoint(str(path))
