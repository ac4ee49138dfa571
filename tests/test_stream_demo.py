"""scripts/stream_demo.sh --reduced: trains a one-way model, builds the long video, streams it, scores it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from tests.test_quickstart import venv_is_set_up

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_the_reduced_demo_runs_end_to_end(tmp_path):
    prefix = Path(sys.prefix)
    if not venv_is_set_up(prefix):
        pytest.skip(f"{prefix} was not set up by scripts/setup_env.sh; the demo would run pip")
    out = tmp_path / "demo"
    env = {**os.environ, "PAN_VENV": str(prefix), "PAN_STREAM_DEMO_OUT": str(out)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "stream_demo.sh"), "--reduced"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    checkpoint = out / "checkpoints" / "pan_pa_online" / "ckpt.best.pth.tar"
    assert checkpoint.is_file()
    args = json.loads((out / "log" / "pan_pa_online" / "args.json").read_text())
    assert (args["modality"], args["shift_mode"], args["train_history"]) == ("PA", "online", True)
    truth = json.loads((out / "long_timeline.json").read_text())
    assert len(truth["actions"]) == 4 and truth["frames"] == 64  # scenes as long as the training videos
    summary = json.loads((out / "stream" / "summary.json").read_text())
    assert summary["mode"] == "online" and summary["frames_processed"] == 64 and summary["steps"] == 16
    with av.open(str(out / "stream" / "stream.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 64
    result = json.loads((out / "demo_result.json").read_text())
    # 4 actions of 16 frames, windows of 4 x 4 frames: the window ending on an action's last frame is the one
    # step of each action that lies inside it.
    assert result["steps"] == 16 and result["scored_steps"] == 4 and 0 <= result["share"] <= 1
    assert "after each change's warm-up" in proc.stdout and "per-step latency p50/p90/p99" in proc.stdout
