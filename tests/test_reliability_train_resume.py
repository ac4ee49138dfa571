"""Exact resume: a run killed with SIGKILL mid-epoch and resumed equals an uninterrupted one, bit for bit.

Also: the learning rate is equal at every step across an epoch-boundary resume
(step and cos schedules), and a resume with another world size, batch size or
training list is refused unless --allow-resume-change.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

import main
from ops.checkpoint_files import CKPT_NAME, atomic_save, read_verified_checkpoint
from ops.files import PAUSE_BEFORE_RENAME_ENV
from ops.lr_schedule import EpochLR, lr_factor
from ops.train_args import get_args_parser
from ops.weights import CheckpointError
from tests.train_support import (
    make_tiny_dataset,
    read_steps,
    state_dict_of,
    train,
    train_argv,
)

FORK = mp.get_context("fork")



@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), n_train=12)  # 6 steps per epoch



def _train_in_child(data: Path, out: Path, extra: tuple[str, ...], pause_at: tuple[int, int] | None = None,
                    marker: str = "") -> None:
    """Train in a forked child; with ``pause_at=(epoch, step)``, the save of that mid-epoch checkpoint
    stops before its rename (the PAN_TEST_PAUSE_BEFORE_RENAME hook) and waits there to be killed."""
    torch.set_num_threads(1)
    if pause_at is not None:
        real_save = main.save_checkpoint

        def save_checkpoint(state, *args, **kwargs):
            if (state["epoch"], state["step_in_epoch"]) == pause_at:
                os.environ[PAUSE_BEFORE_RENAME_ENV] = marker
            return real_save(state, *args, **kwargs)

        main.save_checkpoint = save_checkpoint
    try:
        train(data, out, *extra)
    finally:
        os._exit(0)


def steps_file(out: Path) -> Path:
    return out / "log" / "run" / "steps.tsv"


def step_lines(out: Path) -> list[tuple[tuple[int, int], tuple[float, float]]]:
    """Every line of steps.tsv, repeats included (a resumed run logs the steps it redoes again)."""
    rows = []
    for line in steps_file(out).read_text().splitlines()[1:]:
        epoch, step, loss, lr = line.split("\t")
        rows.append(((int(epoch), int(step)), (float(loss), float(lr))))
    return rows


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = state_dict_of(a / "ckpt" / "run" / CKPT_NAME), state_dict_of(b / "ckpt" / "run" / CKPT_NAME)
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert different == []


EXACT = ("--deterministic", "--save-every", "2", "--lr_type", "cos", "--dropout", "0.5")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_exact(data, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    train(data, reference, *EXACT)

    # The kill lands at a fixed point, whatever the machine's load: the run stops inside the save
    # of the step-4 checkpoint of epoch 1 (written, not yet renamed) and is killed there. The
    # step-2 checkpoint is then the latest, and steps 3 and 4 are lost.
    marker = tmp_path / "paused_before_rename"
    child = FORK.Process(target=_train_in_child, args=(data, killed, EXACT, (1, 4), str(marker)))
    child.start()
    deadline = time.monotonic() + 300  # a guard against a hang, not a timing condition
    while not marker.exists():
        assert child.is_alive() or marker.exists(), "the run ended before reaching the step-4 save"
        assert time.monotonic() < deadline, "the run never reached the step-4 save"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL
    ckpt = read_verified_checkpoint(str(killed / "ckpt" / "run" / CKPT_NAME))
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (1, 2)  # the mid-epoch checkpoint before the kill
    assert step_lines(killed)[-1][0] == (1, 3)  # steps.tsv counts from 0: steps 3 and 4 were trained, then lost

    train(data, killed, *EXACT, "--resume", "auto")
    assert f"epoch 1, step {ckpt['step_in_epoch']}" in (killed / "log" / "run" / "log.txt").read_text()
    assert_same_weights(reference, killed)
    expected = read_steps(reference / "log" / "run")
    lines = step_lines(killed)
    assert len(lines) > len(expected)  # some steps were done twice
    for key, (loss, lr) in lines:
        assert (loss, lr) == expected[key], key  # exact float equality, per step and per try


def _signal_in_child(data: Path, out: Path, signum: int, times: int) -> None:
    """Run main.py's command line in a forked child that sends itself ``signum`` ``times`` times right
    after the mid-epoch checkpoint of epoch 1, step 2 is saved; exits with main.cli's status."""
    torch.set_num_threads(1)
    real_save = main.save_checkpoint

    def save_checkpoint(state, *args, **kwargs):
        result = real_save(state, *args, **kwargs)
        if (state["epoch"], state["step_in_epoch"]) == (1, 2):
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return result

    main.save_checkpoint = save_checkpoint
    status = 1
    try:
        status = main.cli(train_argv(data, out, *EXACT))
    finally:
        os._exit(status)


def _run_child(target, *args) -> int:
    child = FORK.Process(target=target, args=args)
    child.start()
    child.join(timeout=300)
    assert child.exitcode is not None, "the run did not end"
    return child.exitcode


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_finishes_the_step_saves_and_resume_is_bit_exact(data, tmp_path, signum):
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    train(data, reference, *EXACT)
    assert _run_child(_signal_in_child, data, stopped, signum, 1) == 128 + signum  # 143 / 130
    ckpt = read_verified_checkpoint(str(stopped / "ckpt" / "run" / CKPT_NAME))
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (1, 3)  # the step after the signal, then saved
    log = (stopped / "log" / "run" / "log.txt").read_text()
    name = signal.Signals(signum).name
    assert f"received {name}" in log and f"stopped by {name} at epoch 1, step 3 of 6" in log
    assert step_lines(stopped)[-1][0] == (1, 2)  # steps.tsv counts from 0: nothing after step 3 ran

    train(data, stopped, *EXACT, "--resume", "auto")
    assert_same_weights(reference, stopped)
    expected = read_steps(reference / "log" / "run")
    for key, (loss, lr) in step_lines(stopped):
        assert (loss, lr) == expected[key], key


def test_a_second_stop_signal_stops_at_once(data, tmp_path):
    out = tmp_path / "run"
    assert _run_child(_signal_in_child, data, out, signal.SIGTERM, 2) == -signal.SIGTERM  # killed by it
    ckpt = read_verified_checkpoint(str(out / "ckpt" / "run" / CKPT_NAME))
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (1, 2)  # no further step, no further save


def test_resume_at_epoch_boundary_keeps_lr_and_weights_identical(data, tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    args = ("--deterministic", "--lr_steps", "1")  # the step decay falls on the boundary
    train(data, reference, *args)
    train(data, resumed, *args, "--epochs", "1")
    train(data, resumed, *args, "--resume", "auto")
    ref, res = read_steps(reference / "log" / "run"), read_steps(resumed / "log" / "run")
    assert ref.keys() == res.keys() and len(ref) == 12
    assert [res[k][1] for k in sorted(res)] == [ref[k][1] for k in sorted(ref)]
    assert {ref[(1, 0)][1], ref[(0, 5)][1]} == {0.001, 0.01}
    assert_same_weights(reference, resumed)


@pytest.mark.parametrize("lr_type, warmup", [("step", 0.0), ("cos", 0.0), ("cos", 1.5)])
def test_lr_schedule_state_round_trip_gives_equal_lr_at_every_step(lr_type, warmup):
    def make():
        params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
        groups = [{"params": [params[0]], "lr_mult": 1.0}, {"params": [params[1]], "lr_mult": 5.0}]
        opt = torch.optim.SGD(groups, lr=0.1)
        return opt, EpochLR(opt, 0.1, lr_type, epochs=4, steps_per_epoch=5, lr_steps=[2, 3], warmup=warmup)

    opt, sched = make()
    straight = []
    for epoch in range(4):
        for step in range(5):
            sched.set_position(epoch, step)
            straight.append(sched.get_last_lr())
    opt, sched = make()
    resumed = []
    for epoch in range(4):
        if epoch == 2:  # "restart": a fresh scheduler loads the saved state
            state = sched.state_dict()
            opt, sched = make()
            sched.load_state_dict(state)
        for step in range(5):
            sched.set_position(epoch, step)
            resumed.append(sched.get_last_lr())
    assert resumed == straight
    assert all(lrs[1] == pytest.approx(5 * lrs[0]) for lrs in straight)  # lr_mult applies


def test_published_schedules_at_epoch_starts():
    assert [lr_factor(e, "step", 80, [30, 60]) for e in (0, 29, 30, 59, 60, 79)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor(0, "cos", 50) == 1.0 and lr_factor(25, "cos", 50) == pytest.approx(0.5)


def test_resume_with_other_batch_world_size_or_list_is_refused_unless_allowed(data, tmp_path):
    out = tmp_path / "out"
    train(data, out, "--epochs", "1")
    with pytest.raises(CheckpointError, match="batch_size: checkpoint 2, this run 4"):
        train(data, out, "--resume", "auto", "-b", "4")

    path = out / "ckpt" / "run" / CKPT_NAME
    ckpt = read_verified_checkpoint(str(path))
    ckpt.pop("content_sha256")
    atomic_save({**ckpt, "world_size": 2}, str(path))  # as if written by a 2-process run
    with pytest.raises(CheckpointError, match="(?s)world_size: checkpoint 2, this run 1.*--allow-resume-change"):
        train(data, out, "--resume", "auto")
    atomic_save(ckpt, str(path))

    changed = tmp_path / "changed"
    shutil.copytree(data, changed)
    with open(changed / "train_list.txt", "a") as f:
        f.write("frames/train_000 6 1\n")
    argv = train_argv(changed, out, "--resume", "auto")
    with pytest.raises(CheckpointError, match="list_file_sha256: checkpoint"):
        main.main(get_args_parser().parse_args(argv))

    train(data, out, "--resume", "auto", "-b", "4", "--allow-resume-change")
    log = (out / "log" / "run" / "log.txt").read_text()
    assert "--allow-resume-change: batch_size: checkpoint 2, this run 4" in log
    assert read_verified_checkpoint(str(path))["epoch"] == 2
