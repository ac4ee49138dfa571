"""tools/bench_flow.py in a tiny mode (4 frames of 32x32): what it times is the project's PA on the
decoded frames, its report has the documented lines, and without OpenCV the flow baselines are
reported as skipped, with the reason.

No timing is checked: the in-process test replaces the timer with given medians; the command-line
run checks the format of the report only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from ops.PAN_modules import pa_maps
from tests.helpers import REPO
from tools import bench_flow

#: ImageNet mean and std, written here: PAN's frames are normalised with them before PA.
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])

FRAMES, SIZE = 4, 32
PAIRS = FRAMES - 1
NOT_INSTALLED = ("skipped: OpenCV is not installed (an optional, benchmark-only dependency); install it into the "
                 "venv with: .venv/bin/pip install opencv-contrib-python-headless")


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_timed_pa_is_the_projects_pa_on_the_decoded_frames_and_skipped_flow_is_reported(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV absent, whether or not it is installed here
    videos, modules, timed = [], [], {}

    def recording_video(*args):
        videos.append(real_decoded_video(*args))
        return videos[-1]

    class RecordingPA(bench_flow.PA):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            modules.append(self)

    def given_medians(fns, repeats, warmup, device):
        """Runs each timed function once (its output kept) and returns given seconds per call."""
        timed.update({name: fn() for name, fn in fns.items()})
        return {"PA per pair": 0.5, "PA batched": 0.125}

    real_decoded_video = bench_flow.decoded_video
    monkeypatch.setattr(bench_flow, "decoded_video", recording_video)
    monkeypatch.setattr(bench_flow, "PA", RecordingPA)
    monkeypatch.setattr(bench_flow, "interleaved_medians", given_medians)
    caplog.set_level(logging.INFO, logger="bench_flow")
    args = bench_flow.get_args_parser().parse_args(
        ["--size", str(SIZE), "--frames", str(FRAMES), "--repeats", "1", "--threads", "1"])
    fps = bench_flow.main(args)

    # Only PA is timed; frame pairs per second = pairs / median seconds per call.
    assert set(timed) == {"PA per pair", "PA batched"}
    assert fps == {"PA per pair": PAIRS / 0.5, "PA batched": PAIRS / 0.125}

    # The frames: decoded RGB uint8, normalised here; PA: the project's plain pa_maps with the
    # timed modules' kernel (both modules share it), one map per neighbouring pair.
    (video,) = videos
    assert video.shape == (FRAMES, SIZE, SIZE, 3) and video.dtype == np.uint8
    x = torch.tensor(((video / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2), dtype=torch.float32)
    pair, clip = modules
    assert (pair.n_length, clip.n_length) == (2, FRAMES)
    assert torch.equal(pair.shallow_conv.weight, clip.shallow_conv.weight)
    pairs = torch.cat([x[t:t + 2] for t in range(PAIRS)])  # frames 0,1, 1,2, 2,3
    expected = pa_maps(pairs, pair.shallow_conv.weight.detach(), 2).reshape(1, PAIRS, SIZE, SIZE)
    assert expected.max() > 1e-3  # the frames move: maps well above PA's eps-only floor (3e-6)
    per_pair = torch.cat(timed["PA per pair"], dim=1)
    for maps in (per_pair, timed["PA batched"]):
        assert maps.shape == (1, PAIRS, SIZE, SIZE)
        assert (maps - expected).abs().max() <= 1e-5 * expected.abs().max()

    # The report: the PA figures, then each flow baseline with the reason it was skipped.
    lines = [r.getMessage() for r in caplog.records if r.name == "bench_flow"]
    assert lines[0] == (f"video: {FRAMES} decoded frames of {SIZE}x{SIZE} (rendered, mp4-encoded, decoded), "
                        f"{PAIRS} frame pairs; PA on cpu, flow on the CPU")
    assert lines[1].startswith("machine: ") and lines[1].endswith("; OpenCV not installed")
    assert lines[4:] == [
        "  PA per pair         6.0 frame pairs/s",
        "  PA batched         24.0 frame pairs/s",
        f"  Farneback    {NOT_INSTALLED}",
        f"  TV-L1        {NOT_INSTALLED}",
        "  paper (GPU): PA 8196 fps / TV-L1 8 fps = 1024x",
    ]


def test_command_line_tiny_run_reports_every_method(tmp_path):
    have_opencv = importlib.util.find_spec("cv2") is not None
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_flow.py"), "--size", str(SIZE), "--frames", str(FRAMES),
         "--repeats", "1", "--threads", "1", "--tvl1-pairs", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = result.stdout + result.stderr
    figure = r"\s+\d+\.\d frame pairs/s"
    assert re.search(r"^  PA per pair" + figure + "$", report, re.M)
    assert re.search(r"^  PA batched" + figure + "$", report, re.M)
    for flow in ("Farneback", "TV-L1"):
        if have_opencv:
            assert re.search(rf"^  {flow}" + figure + "$", report, re.M)
            assert re.search(rf"^  PA batched / {flow}\s+\d+\.\dx", report, re.M)
        else:
            assert f"  {flow:<12} {NOT_INSTALLED}\n" in report
    assert "paper (GPU): PA 8196 fps / TV-L1 8 fps = 1024x" in report
