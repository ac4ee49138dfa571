"""Reliability of our checkpoints: atomic under SIGKILL, hashed, verified, safe to load, refused when they do not fit.

Each test is one promise of docs/RELIABILITY.md.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from ops.checkpoint import CheckpointError
from ops.checkpoint_io import (
    CKPT_NAME,
    PREV_NAME,
    CheckpointWriteError,
    atomic_save,
    read_verified_checkpoint,
    resolve_resume,
    save_checkpoint,
    verify_checkpoint,
)
from ops.models import PAN
from ops.run_folder import OutputFolderError
from ops.train_args import get_args_parser
from tests.test_train_support import (  # noqa: F401 (one_thread: an autouse fixture)
    REPO,
    make_tiny_dataset,
    one_thread,
    train_argv,
)

FORK = mp.get_context("fork")



def big_state(version: int, mib: int = 16) -> dict:
    """A checkpoint-like dict of about ``mib`` MiB whose every value tells its ``version``."""
    n = mib * 2**20 // 4 // 4
    return {"epoch": version, "state_dict": {f"w{i}": torch.full((n,), float(version)) for i in range(4)}}


def _save_in_child(folder: str, version: int) -> None:
    save_checkpoint(big_state(version), folder)
    os._exit(0)


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_sigkill_at_random_moments_of_a_save_leaves_old_or_new_checkpoint(tmp_path):
    """Kill the writer at 30 random points of a 16 MiB save: the file always loads, verifies and is v or v+1."""
    save_checkpoint(big_state(0), str(tmp_path))
    start = time.perf_counter()
    save_checkpoint(big_state(1), str(tmp_path))
    duration = time.perf_counter() - start
    rng = np.random.default_rng(0)
    version, outcomes = 1, {"old": 0, "new": 0}
    for _ in range(30):
        child = FORK.Process(target=_save_in_child, args=(str(tmp_path), version + 1))
        child.start()
        time.sleep(float(rng.uniform(0, 1.6 * duration)))  # past the end too: the rename and sync
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        found = read_verified_checkpoint(str(tmp_path / CKPT_NAME))["epoch"]
        assert found in (version, version + 1)
        outcomes["new" if found == version + 1 else "old"] += 1
        version = found
        if (tmp_path / PREV_NAME).exists():
            verify_checkpoint(str(tmp_path / PREV_NAME))
        assert len(temp_files(tmp_path)) <= 2
    save_checkpoint(big_state(version + 1), str(tmp_path))
    assert temp_files(tmp_path) == []  # leftovers of killed writers are cleaned by the next save
    print(f"30 kill points: {outcomes['old']} old, {outcomes['new']} new, 0 corrupt")


@pytest.mark.parametrize("damage", ["truncate", "empty", "bitflip"])
def test_damaged_checkpoint_is_reported_corrupt_with_its_path(tmp_path, damage):
    path = tmp_path / CKPT_NAME
    atomic_save(big_state(3, mib=1), str(path))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        # One bit of a weight (not of zip padding): the file still loads, only the hash can tell.
        data[data.find(struct.pack("<4f", 3.0, 3.0, 3.0, 3.0)) + 5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(path)):
        verify_checkpoint(str(path))


def test_resume_auto_falls_back_to_previous_and_explicit_path_fails(tmp_path, caplog):
    save_checkpoint(big_state(1, mib=1), str(tmp_path))
    save_checkpoint(big_state(2, mib=1), str(tmp_path))
    latest = tmp_path / CKPT_NAME
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        resolve_resume(str(latest), str(tmp_path))
    path, ckpt = resolve_resume("auto", str(tmp_path))
    assert path.endswith(PREV_NAME) and ckpt["epoch"] == 1
    assert "trying the previous checkpoint" in caplog.text
    assert (tmp_path / (CKPT_NAME + ".corrupt")).exists()  # kept for inspection, never rotated into prev
    save_checkpoint(big_state(3, mib=1), str(tmp_path))
    assert read_verified_checkpoint(str(tmp_path / PREV_NAME))["epoch"] == 1


def _save_with_file_size_limit(folder: str, conn) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))  # 1 MiB: like a disk that fills up
    try:
        save_checkpoint(big_state(2, mib=4), folder)
        conn.send("saved")
    except CheckpointWriteError as err:
        conn.send(str(err))
    os._exit(0)


def test_full_disk_fails_clearly_and_keeps_previous_checkpoint(tmp_path):
    save_checkpoint(big_state(1, mib=4), str(tmp_path))
    before = (tmp_path / CKPT_NAME).read_bytes()
    receiver, sender = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_save_with_file_size_limit, args=(str(tmp_path), sender))
    child.start()
    child.join()
    assert child.exitcode == 0
    message = receiver.recv()
    assert "could not write checkpoint" in message and "previous checkpoint (if any) is intact" in message
    assert (tmp_path / CKPT_NAME).read_bytes() == before
    assert temp_files(tmp_path) == []


def _cli_with_file_size_limit(argv: list[str], limit: int) -> None:
    torch.set_num_threads(1)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    os._exit(main.cli(argv))


def test_full_disk_during_training_stops_with_a_message_and_keeps_previous_checkpoint(tmp_path):
    data = make_tiny_dataset(tmp_path / "data")
    argv = train_argv(data, tmp_path)
    main.main(get_args_parser().parse_args([*argv, "--epochs", "1"]))
    ckpt = tmp_path / "ckpt" / "run" / CKPT_NAME
    before = ckpt.read_bytes()
    child = FORK.Process(target=_cli_with_file_size_limit, args=([*argv, "--resume", "auto"], 4 * 2**20))
    child.start()
    child.join()
    assert child.exitcode == 1  # a message, not a traceback
    log = (tmp_path / "log" / "run" / "log.txt").read_text()
    assert "ERROR main: could not write checkpoint" in log and "is intact" in log
    assert ckpt.read_bytes() == before
    assert temp_files(ckpt.parent) == []


def test_unwritable_output_folder_fails_before_any_data_is_read(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # The lists do not even exist: the folder check must come first.
    argv = train_argv(tmp_path / "no_data", tmp_path)
    argv[argv.index("--root_model") + 1] = str(blocker / "sub")
    with pytest.raises(OutputFolderError, match=r"--root_model folder .*a_file/sub.* is not writable"):
        main.main(get_args_parser().parse_args(argv))


def test_saving_nan_weights_is_refused():
    state = {"epoch": 1, "state_dict": {"w": torch.tensor([1.0, float("nan")])}}
    with pytest.raises(CheckpointError, match="non-finite weights in 1 tensor.*w"):
        save_checkpoint(state, "/nonexistent-folder-never-written")


# ------------------------------------------------------------------ weights_only


class _Payload:
    """Unpickling this would create ``marker`` (what an attacker's checkpoint could do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("force_unsafe_env", [False, True])
def test_pickle_payload_is_refused_by_resume_and_tune_from(tmp_path, monkeypatch, force_unsafe_env):
    if force_unsafe_env:  # the variable that turns torch.load's safe default off must not open a hole
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "epoch": 1, "payload": _Payload(str(marker))}, evil)
    data = make_tiny_dataset(tmp_path / "data", n_train=2, n_val=1)
    for flag in ("--resume", "--tune_from"):
        argv = train_argv(data, tmp_path / flag.strip("-"), flag, str(evil))
        with pytest.raises(CheckpointError, match="refused"):
            main.main(get_args_parser().parse_args(argv))
        assert not marker.exists()


def test_every_torch_load_in_the_project_passes_weights_only_true():
    offenders = []
    for path in [REPO / "main.py", REPO / "test_models.py", *REPO.glob("ops/*.py"), *REPO.glob("tools/*.py")]:
        if not path.is_file():
            continue
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            if "torch.load(" in line and not line.lstrip().startswith(("#", '"', "`")):
                call = text.splitlines()[i - 1 : i + 3]
                if "weights_only=True" not in " ".join(call):
                    offenders.append(f"{path.relative_to(REPO)}:{i}")
    assert offenders == []


# ------------------------------------------------------------------ mismatches


def _checkpoint_of(model: PAN, folder: Path) -> Path:
    state = {"epoch": 1, "step_in_epoch": 0, "model_config": model.config(), "state_dict": model.state_dict()}
    folder.mkdir(parents=True)
    save_checkpoint(state, str(folder))
    return folder / CKPT_NAME


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"num_class": 5}, r"different shapes \(2\): base_model.classifier.pred.weight \[5, 1280\] vs model \[3, 1280\]"),
        ({"num_segments": 4}, r"different shapes \(\d\): base_model.classifier.TES"),
        ({"modality": "Lite"}, r"unexpected in checkpoint \(2\): PA.shallow_conv.weight, PA.shallow_conv.bias"),
        ({"base_model": "resnet18"}, r"missing in checkpoint \(\d+\): base_model.features"),
    ],
)
def test_checkpoint_of_another_model_is_refused_with_keys_listed(tmp_path, change, expected):
    config = dict(num_class=3, num_segments=2, modality="RGB", base_model="mobilenet_v2", pretrain=None,
                  has_VAP=True, partial_bn=False)
    path = _checkpoint_of(PAN(**{**config, **change}), tmp_path / "ckpt")
    data = make_tiny_dataset(tmp_path / "data", n_train=2, n_val=1)
    argv = train_argv(data, tmp_path, "--resume", str(path))
    with pytest.raises(CheckpointError, match=expected):
        main.main(get_args_parser().parse_args(argv))


def test_bare_state_dict_without_hash_must_still_fit_the_model(tmp_path):
    """A file that is a bare state_dict (no hash) is read, but must still fit the model."""
    path = tmp_path / "bare.pth"
    torch.save({"module.x": torch.zeros(1)}, path)
    data = make_tiny_dataset(tmp_path / "data", n_train=2, n_val=1)
    with pytest.raises(CheckpointError, match="unexpected in checkpoint \\(1\\): x"):
        main.main(get_args_parser().parse_args(train_argv(data, tmp_path, "--tune_from", str(path))))
