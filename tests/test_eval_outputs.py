"""An evaluation's outputs: checked before anything is loaded, written as one unit, and honest about
zero videos and repeated list lines (docs/RELIABILITY.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.weights import CheckpointError
from tests.eval_support import (
    NUM_CLASS,
    NUM_FRAMES,
    make_dataset,
    run_eval,
    save_ours,
    tiny_model,
)

NUM_VIDEOS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("data"), NUM_VIDEOS)
    weights = save_ours(tmp_path_factory.mktemp("ckpt") / "rgb.pth.tar", tiny_model("RGB"))
    return root, weights


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_unwritable_csv_file_fails_before_any_model_is_loaded_naming_flag_and_path(setup, tmp_path):
    root, _ = setup
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    never_read = tmp_path / "missing.pth.tar"  # loading it would raise another error
    with pytest.raises(OSError, match=rf"--csv_file {blocker}/sub/out.csv cannot be written"):
        run_eval(root, never_read, tmp_path / "out", "--csv_file", str(blocker / "sub" / "out.csv"))
    with pytest.raises(OSError, match=rf"--csv_file {tmp_path} is a folder"):
        run_eval(root, never_read, tmp_path / "out", "--csv_file", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no output folder, no staging left


def test_an_output_folder_that_holds_files_is_refused_without_overwrite(setup, tmp_path):
    root, weights = setup
    out = tmp_path / "out"
    run_eval(root, weights, out)
    before = snapshot(out)
    with pytest.raises(OSError, match=rf"--output_dir {out} already holds the outputs of another evaluation"):
        run_eval(root, tmp_path / "missing.pth.tar", out)  # refused before the weights are even looked at
    assert snapshot(out) == before


def test_a_failed_evaluation_leaves_the_previous_outputs_untouched(setup, tmp_path):
    root, weights = setup
    out = tmp_path / "out"
    run_eval(root, weights, out)
    before = snapshot(out)
    corrupt = tmp_path / "corrupt.pth.tar"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        run_eval(root, corrupt, out, "--overwrite")
    assert snapshot(out) == before  # args.json, metrics.json, scores.npz: all of the first run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pth.tar", "out"]  # staging removed


def test_overwrite_replaces_the_whole_folder_once_the_evaluation_succeeded(setup, tmp_path):
    root, weights = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an older evaluation")
    metrics, _ = run_eval(root, weights, out, "--overwrite", "--max_num", "2")
    assert sorted(p.name for p in out.iterdir()) == ["args.json", "confusion.png", "confusion_matrix.csv",
                                                     "metrics.json", "per_class.csv", "report.html", "scores.npz"]
    assert json.loads((out / "metrics.json").read_text())["num_videos"] == metrics["num_videos"] == 2
    assert json.loads((out / "args.json").read_text())["max_num"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_zero_videos_are_reported_and_the_outputs_still_written(setup, tmp_path):
    root, weights = setup
    metrics, saved = run_eval(root, weights, tmp_path / "none", "--max_num", "0")
    assert metrics["num_videos"] == 0 and metrics["top1"] is None and saved["scores"].shape == (0, NUM_CLASS)
    assert json.loads((tmp_path / "none" / "metrics.json").read_text())["top1"] is None


def test_every_video_unreadable_with_skip_bad_still_writes_what_was_skipped(setup, tmp_path):
    root = make_dataset(tmp_path / "data", 2)
    for jpeg in (root / "frames").rglob("*.jpg"):
        jpeg.write_bytes(b"broken")
    weights = setup[1]
    metrics, _ = run_eval(root, weights, tmp_path / "out", "--skip-bad")
    assert (metrics["num_videos"], metrics["num_skipped"]) == (0, 2)
    skipped = json.loads((tmp_path / "out" / "metrics.json").read_text())["skipped"]
    assert sorted(skipped) == ["frames/video0", "frames/video1"]


def test_a_repeated_list_line_counts_its_video_once_and_is_named(setup, tmp_path, capfd):
    root, weights = setup
    listed = (root / "val.txt").read_text().splitlines()
    repeated = tmp_path / "val_repeated.txt"
    repeated.write_text("\n".join([*listed, listed[1]]) + "\n")
    once, _ = run_eval(root, weights, tmp_path / "once")
    capfd.readouterr()
    twice, saved = run_eval(root, weights, tmp_path / "twice", "--test_list", str(repeated))
    assert twice == once and saved["indices"].tolist() == list(range(NUM_VIDEOS))
    assert f"line {NUM_VIDEOS + 1} repeats line 2: frames/video1" in capfd.readouterr().err
    assert f"frames/video1 {NUM_FRAMES}" in listed[1]
