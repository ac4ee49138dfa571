"""tools/stream.py: file, folder, truncated and unopenable sources; outputs; step export from the command line."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ops.models import PAN
from tools import stream as stream_tool
from tools.make_synthetic import render_video, video_rng

T, M, SIZE = 4, 4, 32



@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    torch.manual_seed(0)
    model = PAN(12, T, "Lite", base_model="resnet18", pretrain=None, is_shift=True, shift_mode="online",
                has_VAP=True, partial_bn=False).eval()
    weights = root / "online.pth.tar"
    torch.save({"epoch": 1, "model_config": model.config(), "state_dict": model.state_dict(),
                "args": {"crop_size": SIZE, "scale_size": SIZE}}, weights)
    frames = np.concatenate([render_video(c, video_rng(0, "val", c), SIZE, 32) for c in (0, 5, 8)])  # 96 frames
    video = root / "video.mp4"
    with av.open(str(video), "w", options={"movflags": "faststart"}) as container:  # index first: a cut file opens
        s = container.add_stream("mpeg4", rate=12)
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in s.encode():
            container.mux(packet)
    data = video.read_bytes()
    truncated = root / "truncated.mp4"
    truncated.write_bytes(data[:len(data) // 2])
    folder = root / "frames"
    folder.mkdir()
    for i, f in enumerate(frames[:40]):
        Image.fromarray(f).save(folder / f"img_{i + 1:05d}.jpg")
    categories = root / "category.txt"
    categories.write_text("\n".join(f"action {i}" for i in range(12)) + "\n")
    return {"root": root, "weights": str(weights), "video": str(video), "truncated": str(truncated),
            "folder": str(folder), "categories": str(categories)}


def run(files, out: Path, *extra: str) -> int:
    args = stream_tool.get_args_parser().parse_args(
        ["--weights", files["weights"], "--output_dir", str(out), "--categories", files["categories"], *extra])
    return stream_tool.main(args)


def read_outputs(out: Path) -> tuple[list[dict], dict, int]:
    with open(out / "timeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((out / "summary.json").read_text())
    with av.open(str(out / "stream.mp4")) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    return rows, summary, decoded


def test_a_video_file_gives_the_annotated_video_the_timeline_and_the_summary(files, tmp_path, capsys):
    assert run(files, tmp_path / "out", "--source", files["video"], "--topk", "2") == 0
    rows, summary, decoded = read_outputs(tmp_path / "out")
    assert summary["frames_read"] == summary["frames_processed"] == decoded == 96
    assert summary["steps"] == len(rows) == 96 // M and summary["mode"] == "online"
    assert summary["frames_dropped"] == 0 and summary["ended_early"] is None
    assert set(summary["step_latency_ms"]) == {"p50", "p90", "p99", "mean", "max"}
    assert [int(r["frame"]) for r in rows] == list(range(M, 97, M))
    assert [r["warm"] for r in rows[:T]] == ["0"] * (T - 1) + ["1"]
    assert rows[0]["top1_name"].startswith("action ") and "top2_prob" in rows[0] and "top3" not in rows[0]
    assert float(rows[0]["latency_ms"]) > 0
    assert "96 of 96 frames processed, 0 dropped, 24 steps" in capsys.readouterr().out


def test_a_frame_folder_streams_and_realtime_counts_what_it_drops(files, tmp_path):
    assert run(files, tmp_path / "folder", "--source", files["folder"]) == 0
    rows, summary, decoded = read_outputs(tmp_path / "folder")
    assert summary["frames_processed"] == decoded == 40 and len(rows) == 10 and summary["source_fps"] == 25
    assert run(files, tmp_path / "rt", "--source", files["video"], "--realtime", "--fps", "2000") == 0
    rows, summary, decoded = read_outputs(tmp_path / "rt")
    assert summary["realtime"] and summary["frames_read"] == 96
    assert summary["frames_processed"] + summary["frames_dropped"] == 96 == decoded + summary["frames_dropped"]


def test_a_truncated_video_ends_cleanly_with_everything_up_to_the_last_good_frame(files, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert run(files, tmp_path / "cut", "--source", files["truncated"]) == 0
    rows, summary, decoded = read_outputs(tmp_path / "cut")
    good = summary["frames_processed"]
    assert 0 < good < 96 and decoded == good and len(rows) == good // M
    assert summary["ended_early"].startswith(files["truncated"]) and f"last good frame is frame {good}" in \
        summary["ended_early"]
    assert f"last good frame is frame {good}" in caplog.text


@pytest.mark.parametrize("kind", ["missing", "garbage", "camera", "empty folder"])
def test_an_unopenable_source_is_refused_before_any_output(files, tmp_path, caplog, kind):
    source = {"missing": str(tmp_path / "nothing.mp4"), "camera": "/dev/video9"}.get(kind)
    if kind == "garbage":
        source = str(tmp_path / "garbage.mp4")
        Path(source).write_bytes(b"not a video" * 100)
    if kind == "empty folder":
        source = str(tmp_path / "empty")
        Path(source).mkdir()
    out = tmp_path / "never"
    with caplog.at_level(logging.ERROR):
        assert run(files, out, "--source", source) == 2
    assert not out.exists()
    expected = {"missing": "no such frame folder, video file", "garbage": "cannot open the video",
                "camera": "cannot open the camera (PyAV v4l2 input)", "empty folder": "no frame named"}[kind]
    assert source in caplog.text and expected in caplog.text


def test_the_step_exports_from_the_command_line(files, tmp_path, caplog):
    path = tmp_path / "step.pt2"
    with caplog.at_level(logging.INFO):
        assert run(files, tmp_path / "unused", "--export_step", str(path)) == 0
    assert path.is_file() and "parity over 8 steps" in caplog.text and "top-1 8/8" in caplog.text
    assert not (tmp_path / "unused").exists()
