"""Distributed training: torchrun on CPU equals one process; validation counts each video once.

Each test is one promise of docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import main
from ops.checkpoint_files import CKPT_NAME, read_verified_checkpoint
from ops.samplers import ResumableSampler, ShardSampler
from ops.train_args import UsageError, get_args_parser
from tests.train_support import REPO, make_tiny_dataset, read_steps, train_argv


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log" / "run" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_one_process_with_the_same_total_batch(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=32, n_val=5)  # 5: shards of 3 and 2, no padding
    # 8 steps of 4 videos. Random-init training at lr 0.01 is chaotic enough to amplify float rounding
    # (~1e-9 after one step) by ~100x per step; lr 0.001 and resnet18 keep the comparison meaningful.
    common = ("--freeze-bn", "--dropout", "0", "--epochs", "1", "--arch", "resnet18", "--lr", "0.001")
    one, two = tmp_path / "one", tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(REPO / "main.py"), *train_argv(data, two, *common, "-b", "2")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the one-process reference runs while torchrun starts
        main.main(get_args_parser().parse_args(train_argv(data, one, *common, "-b", "4")))
    finally:
        torch.set_num_threads(before)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]

    ckpt_one = read_verified_checkpoint(str(one / "ckpt" / "run" / CKPT_NAME))
    ckpt_two = read_verified_checkpoint(str(two / "ckpt" / "run" / CKPT_NAME))
    assert (ckpt_two["world_size"], ckpt_two["batch_size"], len(ckpt_two["rng_state"])) == (2, 2, 2)
    assert not any(k.startswith("module.") for k in ckpt_two["state_dict"])
    diffs = {k: (ckpt_one["state_dict"][k].double() - v.double()).abs().max().item()
             for k, v in ckpt_two["state_dict"].items() if v.is_floating_point()}
    worst = max(diffs, key=diffs.get)
    print(f"8 steps, 1 vs 2 processes: largest weight difference {diffs[worst]:.2e} ({worst})")
    assert diffs[worst] <= 1e-6, (worst, diffs[worst])
    assert len(read_steps(two / "log" / "run")) == 8

    # Validation: every video once (5, not 6 with padding), the same top-1 as one process.
    m1, m2 = metrics(one), metrics(two)
    assert [m["count"] for m in m2] == [5]
    assert [m["top1"] for m in m2] == [m["top1"] for m in m1]


SIGNAL_ONE_RANK = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import main
real_save = main.save_checkpoint
def save_checkpoint(state, *args, **kwargs):
    result = real_save(state, *args, **kwargs)
    if (state["epoch"], state["step_in_epoch"]) == (0, 2):
        open({marker!r} + os.environ["RANK"], "w").close()
    return result
main.save_checkpoint = save_checkpoint
if os.environ["RANK"] == "1":  # only rank 1 is signalled, once rank 0 has written the step-2 checkpoint
    real_on_main = main.on_main_process
    def on_main_process(fn, info):
        result = real_on_main(fn, info)
        if os.path.exists({marker!r} + "0") and not os.path.exists({marker!r} + "sent"):
            open({marker!r} + "sent", "w").close()
            os.kill(os.getpid(), signal.SIGTERM)
        return result
    main.on_main_process = on_main_process
sys.exit(main.cli(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_with_one_checkpoint(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=16, n_val=2)  # 4 steps of 2 x 2 videos
    marker = str(tmp_path / "saved_")
    script = tmp_path / "signal_one_rank.py"
    script.write_text(SIGNAL_ONE_RANK.format(repo=str(REPO), marker=marker))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(script), *train_argv(data, out, "--epochs", "1", "--save-every", "2", "-b", "2")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    # Both ranks stopped after the same step and said so (rank 1 logs warnings too); torchrun saw the
    # first of them leave with 128 + SIGTERM.
    assert output.count("stopped by SIGTERM at epoch 0, step 3 of 4") == 2, output[-3000:]
    assert "failed (exitcode: 143)" in output
    ckpt = read_verified_checkpoint(str(out / "ckpt" / "run" / CKPT_NAME))
    assert (ckpt["epoch"], ckpt["step_in_epoch"], len(ckpt["rng_state"])) == (0, 3, 2)
    assert "stopped by SIGTERM at epoch 0, step 3 of 4" in (out / "log" / "run" / "log.txt").read_text()


STOP_ONE_RANK = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import main
with open({pids!r} + os.environ["RANK"], "w") as f:  # torchrun gives each worker its own session
    f.write(str(os.getpid()))
if os.environ["RANK"] == "1":  # rank 1 is stopped (SIGSTOP) once the step-2 checkpoint exists
    real_on_main = main.on_main_process
    def on_main_process(fn, info):
        result = real_on_main(fn, info)
        if os.path.exists({ckpt!r}):
            os.kill(os.getpid(), signal.SIGSTOP)
        return result
    main.on_main_process = on_main_process
sys.exit(main.cli(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_stopped_peer_is_named_when_the_collective_timeout_expires(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=16, n_val=2)
    out = tmp_path / "run"
    script = tmp_path / "stop_one_rank.py"
    pids = str(tmp_path / "pid_of_rank_")
    script.write_text(STOP_ONE_RANK.format(repo=str(REPO), ckpt=str(out / "ckpt" / "run" / CKPT_NAME), pids=pids))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(script), *train_argv(data, out, "--epochs", "1", "--save-every", "2", "-b", "2",
                                    "--dist-timeout", "0.1")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    log = out / "log" / "run" / "log.txt"
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a timing condition
        while "--dist-timeout" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None, "the run ended without reporting the time-out"
            assert time.monotonic() < deadline, "no time-out was reported"
            time.sleep(0.2)
    finally:
        for rank in (0, 1):  # the workers first: rank 1 is still stopped, and neither is in torchrun's group
            try:
                os.kill(int(open(pids + str(rank)).read()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = log.read_text()
    assert "process 0 waited more than --dist-timeout 0.1 min" in text
    waited_on = text.split("(stopped, hung or dead):")[1].splitlines()[1].strip()
    assert waited_on.startswith("rank 1 (pid ") and "last at epoch 0, step 2" in waited_on, text[-2000:]


def test_sync_bn_is_refused_on_cpu_before_anything_is_written(tmp_path):
    argv = train_argv(tmp_path / "no_data", tmp_path, "--sync_bn")
    with pytest.raises(UsageError, match="--sync_bn needs CUDA"):
        main.main(get_args_parser().parse_args(argv))
    assert not (tmp_path / "log").exists()


@pytest.mark.parametrize("world", [2, 3, 4])
def test_global_batches_do_not_depend_on_the_process_count(world):
    single = ResumableSampler(50, batch_size=world * 2, num_replicas=1, rank=0, seed=3)
    single.set_epoch(7)
    shards = []
    for rank in range(world):
        s = ResumableSampler(50, batch_size=2, num_replicas=world, rank=rank, seed=3)
        s.set_epoch(7)
        shards.append(list(s))
    order = list(single)
    for k in range(single.num_batches):
        union = sorted(i for shard in shards for i in shard[2 * k: 2 * k + 2])
        assert union == sorted(order[k * world * 2: (k + 1) * world * 2])


def test_sampler_starts_mid_epoch_with_the_batches_not_yet_seen():
    s = ResumableSampler(20, batch_size=4, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=8)
    assert list(s) == full[8:] and len(s) == len(full) - 8
    s.set_epoch(3)
    assert list(s) != full  # a new order every epoch


@pytest.mark.parametrize("n, world", [(5, 2), (7, 3), (2, 4)])
def test_validation_shards_cover_every_video_exactly_once(n, world):
    indices = [i for rank in range(world) for i in ShardSampler(n, world, rank)]
    assert sorted(indices) == list(range(n))
