"""Two machines, simulated: two torchrun invocations of one process each meet through c10d on 127.0.0.1.

Training over the two "nodes" equals one process with the same total batch
(within 1e-6 in the weights), and evaluation over them counts each video once
with the one-process figures, for ``main.py`` and ``test_models.py`` alike,
launched through ``scripts/launch.sh`` as a user would on each machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main
import test_models
from ops.checkpoint_files import CKPT_NAME, read_verified_checkpoint
from ops.train_args import get_args_parser
from tests.train_support import REPO, make_tiny_dataset, train_argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_nodes(entry: str, argv: list[str], cwd: Path) -> None:
    """``scripts/launch.sh entry argv`` on node 0 and node 1 at once; both must succeed."""
    endpoint = f"127.0.0.1:{free_port()}"
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable,
               "NNODES": "2", "NODE_RANK": str(rank), "NPROC": "1", "RDZV_ENDPOINT": endpoint,
               "RDZV_ID": f"test-{entry}"}
        procs.append(subprocess.Popen(["bash", str(REPO / "scripts" / "launch.sh"), entry, *argv], cwd=cwd, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for rank, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"node {rank}:\n{output[-3000:]}"


def in_one_thread(fn):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_two_nodes_train_and_evaluate_like_one_process(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=16, n_val=5)  # 5 videos: shards of 3 and 2
    common = ("--freeze-bn", "--dropout", "0", "--epochs", "1", "--arch", "resnet18", "--lr", "0.001")
    one, two = tmp_path / "one", tmp_path / "two"
    run_two_nodes("main.py", train_argv(data, two, *common, "-b", "2"), tmp_path)
    in_one_thread(lambda: main.main(get_args_parser().parse_args(train_argv(data, one, *common, "-b", "4"))))

    ckpt_one = read_verified_checkpoint(str(one / "ckpt" / "run" / CKPT_NAME))
    ckpt_two = read_verified_checkpoint(str(two / "ckpt" / "run" / CKPT_NAME))
    assert (ckpt_two["world_size"], ckpt_two["batch_size"]) == (2, 2)
    worst = max((ckpt_one["state_dict"][k].double() - v.double()).abs().max().item()
                for k, v in ckpt_two["state_dict"].items() if v.is_floating_point())
    assert worst <= 1e-6
    val_two = [json.loads(line) for line in (two / "log" / "run" / "metrics.jsonl").read_text().splitlines()]
    val_one = [json.loads(line) for line in (one / "log" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["count"] for m in val_two] == [5] and [m["top1"] for m in val_two] == [m["top1"] for m in val_one]

    weights = str(two / "ckpt" / "run" / CKPT_NAME)
    eval_argv = ["tiny", "--weights", weights, "--root_path", str(data), "--val_list", str(data / "val_list.txt"),
                 "--num_class", "3", "--input_size", "32", "-j", "0", "--device", "cpu"]
    run_two_nodes("test_models.py", [*eval_argv, "--output_dir", str(tmp_path / "eval_two")], tmp_path)
    alone = in_one_thread(lambda: test_models.main(test_models.get_args_parser().parse_args(
        [*eval_argv, "--output_dir", str(tmp_path / "eval_one")])))
    together = json.loads((tmp_path / "eval_two" / "metrics.json").read_text())
    assert together["num_videos"] == alone["num_videos"] == 5
    assert (together["top1"], together["top5"]) == (alone["top1"], alone["top5"])
