"""The test scripts (published settings, dry run, pass-through) and distributed evaluation
under torchrun counting every video exactly once."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

import test_models
from ops.weights import parse_released_name
from tests.helpers import REPO
from tests.eval_support import make_dataset, run_eval, save_ours, tiny_model  # noqa: F401

DATASETS = ("something", "somethingv2", "kinetics", "ucf101", "hmdb51", "jester")
VARIANTS = {"Lite": ["Lite"], "Full": ["RGB", "PA"], "En": ["Lite", "RGB", "PA"]}
RELEASED = ("something", "somethingv2")


def dry_run(script: str, *extra: str, nproc: int | None = None) -> list[str]:
    env = {**os.environ, "PAN_DRY_RUN": "1", "PYTHON": sys.executable}
    env.pop("NPROC", None)
    if nproc is not None:
        env["NPROC"] = str(nproc)
    result = subprocess.run(["bash", str(REPO / script), *extra], env=env, capture_output=True, text=True,
                            timeout=30, check=True)
    return shlex.split(result.stdout)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_script_has_the_published_settings(dataset, variant):
    argv = dry_run(f"scripts/test/{dataset}/{variant}.sh")
    assert argv[0] == sys.executable and argv[1].endswith("test_models.py")
    args = test_models.get_args_parser().parse_args(argv[2:])
    assert args.dataset == dataset and args.VAP and args.test_crops == 1
    weights = args.weights.split(",")
    assert args.test_segments.split(",") == ["8"] * len(weights)
    if dataset in RELEASED:  # the released files, by their published names
        assert all(w.startswith("pretrained/PAN_") for w in weights)
    else:  # the best checkpoints of the matching training scripts, named by their run names
        assert all(w.startswith("checkpoint/PAN_") and w.endswith("/ckpt.best.pth.tar") for w in weights)
        weights = [w.split("/")[1] + ".pth.tar" for w in weights]
    described = [parse_released_name(w) for w in weights]
    assert [d["modality"] for d in described] == VARIANTS[variant]
    assert all((d["dataset"], d["arch"], d["num_segments"]) == (dataset, "resnet50", 8) for d in described)
    assert (args.full_res, args.twice_sample) == ((True, True) if variant == "En" else (False, False))


def test_script_passes_extra_arguments_and_uses_torchrun_with_nproc():
    argv = dry_run("scripts/test/something/Full.sh", "--device", "cpu", "--coeff=1,2", nproc=3)
    assert argv[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3"]
    args = test_models.get_args_parser().parse_args(argv[6:])
    assert args.device == "cpu" and args.coeff == "1,2"


def test_script_refuses_a_bad_nproc():
    env = {**os.environ, "PAN_DRY_RUN": "1", "NPROC": "two"}
    result = subprocess.run(["bash", str(REPO / "scripts/test/jester/Lite.sh")], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "NPROC must be a positive integer" in result.stderr


@pytest.mark.slow
def test_torchrun_two_processes_count_each_video_once_and_match_one_process(tmp_path):
    # 5 videos on 2 processes: 3 + 2, no padding; run through the published script with NPROC=2.
    root = make_dataset(tmp_path / "data", 5)
    ckpt = save_ours(tmp_path / "lite.pth.tar", tiny_model("Lite"))
    common = ["--weights=" + str(ckpt), "--test_segments=4", "--root_path", str(root), "--test_list", "val.txt",
              "--num_class", "3", "--input_size", "32", "--batch_size", "2", "-j", "0", "--device", "cpu",
              "--test_crops", "3"]
    one, one_saved = run_eval(root, ckpt, tmp_path / "one", "--test_segments=4", "--test_crops", "3")
    env = {**os.environ, "NPROC": "2", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("PAN_DRY_RUN", None)
    result = subprocess.run(
        ["bash", str(REPO / "scripts/test/something/Lite.sh"), *common, "--output_dir", str(tmp_path / "two")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2
    assert two["num_videos"] == 5 == one["num_videos"]
    assert two["top1"] == one["top1"] and two["top5"] == one["top5"]
    with np.load(tmp_path / "two" / "scores.npz") as saved:
        assert saved["indices"].tolist() == list(range(5))
        np.testing.assert_allclose(saved["scores"], one_saved["scores"], rtol=1e-5, atol=1e-5)
    assert result.stderr.count("Overall Prec@1") == 1, "only rank 0 reports"
