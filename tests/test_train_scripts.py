"""scripts/train/<dataset>/{Lite,Full_RGB,Full_PA}.sh: each prints a command main.py accepts.

``PAN_DRY_RUN=1`` makes a script print its command instead of running it; the
test parses that command with ``main.py``'s own parser and checks the settings.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from ops.train_args import check_args, default_store_name, get_args_parser
from tests.train_support import REPO

SCRIPTS = sorted((REPO / "scripts" / "train").glob("*/*.sh"))
DATASETS = ("something", "somethingv2", "kinetics", "ucf101", "hmdb51", "jester")
MODALITY = {"Lite.sh": "Lite", "Full_RGB.sh": "RGB", "Full_PA.sh": "PA"}
TOTAL_BATCH = {"kinetics": 128}


def dry_run(script: Path, *extra: str, nproc: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PAN_DRY_RUN": "1", "PYTHON": "python"}
    env.pop("NPROC", None)
    if nproc is not None:
        env["NPROC"] = str(nproc)
    return subprocess.run(["bash", str(script), *extra], env=env, capture_output=True, text=True, timeout=30)


def parsed(script: Path, *extra: str, nproc: int | None = None) -> tuple[list[str], object]:
    result = dry_run(script, *extra, nproc=nproc)
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout)
    cut = next(i for i, a in enumerate(argv) if a.endswith("main.py"))
    args = get_args_parser().parse_args(argv[cut + 1:])
    check_args(args)
    return argv[:cut + 1], args


def test_every_dataset_has_its_three_scripts():
    assert {(s.parent.name, s.name) for s in SCRIPTS} == {(d, m) for d in DATASETS for m in MODALITY}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: f"{s.parent.name}/{s.name}")
def test_script_command_parses_with_published_settings(script):
    launcher, args = parsed(script, "--root_path", "/data/x")
    dataset = script.parent.name
    assert launcher[-1] == str(REPO / "main.py") and "torch.distributed.run" not in launcher
    assert (args.dataset, args.modality, args.arch, args.num_segments) == (dataset, MODALITY[script.name], "resnet50", 8)
    assert (args.shift, args.shift_div, args.shift_place, args.VAP, args.no_partialbn) == (True, 8, "blockres", True, True)
    assert args.batch_size == TOTAL_BATCH.get(dataset, 64)  # one process takes the whole batch
    assert args.clip_gradient == 20 and args.root_path == "/data/x"
    # The published rule: lr 0.01 per 64 videos (fine-tuning uses a tenth of it).
    scale = 0.1 if dataset in ("ucf101", "hmdb51") else 1.0
    assert args.lr == pytest.approx(0.01 * scale * args.batch_size / 64)
    assert default_store_name(args).startswith(f"PAN_{args.modality}_{dataset}_resnet50_shift8_blockres_avg_segment8")
    if dataset in ("ucf101", "hmdb51"):
        assert "kinetics" in args.tune_from


def test_published_something_v1_schedules():
    _, lite = parsed(REPO / "scripts/train/something/Lite.sh")
    _, rgb = parsed(REPO / "scripts/train/something/Full_RGB.sh")
    assert (lite.lr_steps, lite.epochs, lite.dropout) == ([30, 60], 80, 0.5)
    assert (rgb.lr_steps, rgb.epochs) == ([20, 40], 50)


def test_nproc_splits_the_total_batch_over_torchrun_processes_and_extra_args_win():
    launcher, args = parsed(REPO / "scripts/train/kinetics/Lite.sh", "--lr", "0.01", nproc=4)
    assert "torch.distributed.run" in launcher and "--nproc_per_node=4" in launcher
    assert args.batch_size == 32 and args.lr == 0.01  # 128 / 4 per process; the user's --lr wins


def test_nproc_that_does_not_split_the_batch_is_refused():
    result = dry_run(REPO / "scripts/train/something/Lite.sh", nproc=3)
    assert result.returncode == 2 and "does not split evenly over 3 processes" in result.stderr
