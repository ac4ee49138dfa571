"""Reliability of our checkpoints: atomic under SIGKILL, hashed, verified, safe to load, refused when they do not fit.

Each test is one promise of docs/RELIABILITY.md.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import re
import resource
import signal
import struct
import time
from pathlib import Path

import pytest
import torch

import main
from ops.checkpoint_files import (
    CKPT_NAME,
    FORMAT_VERSION,
    PREV_NAME,
    CheckpointWriteError,
    atomic_save,
    read_verified_checkpoint,
    resolve_resume,
    save_checkpoint,
    verify_checkpoint,
)
from ops.files import PAUSE_BEFORE_RENAME_ENV, OutputFolderError
from ops.models import PAN
from ops.train_args import get_args_parser
from ops.weights import CheckpointError, read_checkpoint
from tests.train_support import (
    REPO,
    make_tiny_dataset,
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


#: The stages of a save (``save_checkpoint``) at which the writer is killed, and what must be left:
#: the old checkpoint until the rename of the new one, the new one from then on.
KILL_STAGES = {
    "linking ckpt.prev.pth.tar": "old",  # keep_previous: hard link made, not yet renamed into place
    "writing the temporary file": "old",  # half of the new file's bytes written and synced
    "before the rename": "old",  # the new file complete and synced (the PAN_TEST_PAUSE_BEFORE_RENAME hook)
    "after the rename": "new",  # renamed into place, the folder not yet synced
}
_REAL_REPLACE, _REAL_LINK, _REAL_SAVE = os.replace, os.link, torch.save


def _pause(marker: str, note: str) -> None:
    """Tell the parent where this writer stopped, then wait for its SIGKILL."""
    with open(marker + ".part", "w") as f:
        f.write(note)
    _REAL_REPLACE(marker + ".part", marker)
    while True:
        time.sleep(1)


def _save_paused_at(folder: str, version: int, stage: str, marker: str) -> None:
    """In a forked child: save ``version``, stopping at ``stage`` of KILL_STAGES until killed.

    The pauses wrap the real calls of this child only; the save itself is the real one.
    """
    if stage == "linking ckpt.prev.pth.tar":
        def link(src, dst, *args, **kwargs):
            _REAL_LINK(src, dst, *args, **kwargs)
            _pause(marker, dst)
        os.link = link
    elif stage == "writing the temporary file":
        def half_save(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            _REAL_SAVE(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            _pause(marker, "half written")
        torch.save = half_save
    elif stage == "before the rename":
        os.environ[PAUSE_BEFORE_RENAME_ENV] = marker  # the hook inside atomic_write
    elif stage == "after the rename":
        def replace(src, dst, *args, **kwargs):
            _REAL_REPLACE(src, dst, *args, **kwargs)
            if os.path.basename(dst) == CKPT_NAME:
                _pause(marker, dst)
        os.replace = replace
    save_checkpoint(big_state(version, SAVE_MIB), folder)
    os._exit(3)  # not reached: the save stops at its stage


def kill_during_save(folder: Path, version: int, stage: str) -> list[Path]:
    """Fork a writer of ``version``, SIGKILL it once it has reached ``stage``; returns the temporary files then present."""
    marker = folder.parent / "writer_paused_here"
    marker.unlink(missing_ok=True)
    child = FORK.Process(target=_save_paused_at, args=(str(folder), version, stage, str(marker)))
    child.start()
    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a timing condition
        while not marker.exists():
            assert child.is_alive() or marker.exists(), f"the save ended (exit {child.exitcode}) before {stage!r}"
            assert time.monotonic() < deadline, f"the save never reached {stage!r}"
            time.sleep(0.01)
        temps = sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))
    finally:
        if child.exitcode is None:
            os.kill(child.pid, signal.SIGKILL)
        child.join()
    assert child.exitcode == -signal.SIGKILL
    return temps


SAVE_MIB = 8


def test_sigkill_at_each_stage_of_a_save_leaves_old_or_new_checkpoint(tmp_path):
    """Kill the writer of an 8 MiB checkpoint at each stage of a save, twice over: what is left always
    loads, verifies and is the old version until the rename, the new one after; the next save cleans up."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_checkpoint(big_state(0, SAVE_MIB), str(folder))
    save_checkpoint(big_state(1, SAVE_MIB), str(folder))
    version, outcomes = 1, []
    for stage, expected in [*KILL_STAGES.items(), *KILL_STAGES.items()]:
        temps = kill_during_save(folder, version + 1, stage)
        found = read_verified_checkpoint(str(folder / CKPT_NAME))["epoch"]
        assert found == (version if expected == "old" else version + 1), stage
        previous = read_verified_checkpoint(str(folder / PREV_NAME))["epoch"]
        # ckpt.prev.pth.tar becomes the old checkpoint once its link is renamed into place.
        assert previous == (version - 1 if stage == "linking ckpt.prev.pth.tar" else version), stage
        if stage == "writing the temporary file":  # the kill landed inside the write of the new file
            assert len(temps) == 1 and temps[0].name.startswith(f".{CKPT_NAME}.")
            with pytest.raises(CheckpointError, match="corrupt"):
                read_verified_checkpoint(str(temps[0]))
        if stage == "before the rename":  # the new file was complete, only the rename was missing
            assert len(temps) == 1 and read_verified_checkpoint(str(temps[0]))["epoch"] == version + 1
        if stage == "linking ckpt.prev.pth.tar":
            assert [t.name.startswith(f".{PREV_NAME}.") for t in temps] == [True]
        outcomes.append((stage, expected))
        version = found
    mid_write = [s for s, e in outcomes if s in ("writing the temporary file", "before the rename")]
    assert len(mid_write) == 4 and len(outcomes) == 8
    save_checkpoint(big_state(version + 1, SAVE_MIB), str(folder))
    assert temp_files(folder) == []  # leftovers of killed writers are cleaned by the next save
    assert read_verified_checkpoint(str(folder / CKPT_NAME))["epoch"] == version + 1
    assert read_verified_checkpoint(str(folder / PREV_NAME))["epoch"] == version


@pytest.mark.parametrize(
    "damage, reported",
    [
        ("truncate", "is corrupt or truncated"),  # the loader fails
        ("empty", "is empty"),
        ("bitflip", "is corrupt: its content hash is"),  # the file loads: only the hash can tell
    ],
)
def test_damaged_checkpoint_is_reported_corrupt_with_its_path(tmp_path, damage, reported):
    path = tmp_path / CKPT_NAME
    atomic_save(big_state(3, mib=1), str(path))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        # One bit of a weight (not of zip padding or headers): the 2nd value of the first run of 3.0s.
        at = data.find(struct.pack("<4f", 3.0, 3.0, 3.0, 3.0))
        assert at > 0, "no weight bytes found to flip"
        data[at + 5] ^= 0x01
    path.write_bytes(bytes(data))
    if damage == "bitflip":
        # The premise: the damaged file still loads (weights_only) as a checkpoint whose state dict
        # differs from the saved one in exactly one weight; no loader error could report it.
        loaded = read_checkpoint(str(path))
        changed = {name: torch.nonzero(t != 3.0).flatten().tolist() for name, t in loaded["state_dict"].items()}
        assert sorted(changed) == ["w0", "w1", "w2", "w3"] and loaded["epoch"] == 3
        assert sum(len(i) for i in changed.values()) == 1 and changed["w0"] == [1]
        assert loaded["state_dict"]["w0"][1].item() == struct.unpack("<f", bytes(data[at + 4 : at + 8]))[0]
    with pytest.raises(CheckpointError, match=f"checkpoint {re.escape(str(path))} {reported}"):
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
    # The lists exist but are empty: the folder check must come before any data is read.
    (tmp_path / "no_data").mkdir()
    for name in ("train_list.txt", "val_list.txt"):
        (tmp_path / "no_data" / name).write_text("")
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
    """A checkpoint of this trainer (training state included) holding ``model``."""
    state = {"epoch": 1, "step_in_epoch": 0, "model_config": model.config(), "state_dict": model.state_dict(),
             "optimizer": {}, "scheduler": {}, "format_version": FORMAT_VERSION}
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
                  has_VAP=True, partial_bn=False, is_shift=True)  # the run's model but for `change`
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
