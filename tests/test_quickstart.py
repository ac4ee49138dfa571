"""scripts/quickstart.sh in its reduced mode: the newcomer's first command, end to end.

The tiny mode runs the very same steps as the full one (dataset, main.py,
test_models.py, demo, PA pictures, summary) on 36 videos of 16 frames at
32x32, for one epoch; accuracy is not checked, only that every step ran and
left its outputs where the summary says.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def venv_is_set_up(prefix: Path) -> bool:
    """True when scripts/setup_env.sh would find this environment ready (and so not run pip)."""
    stamp = prefix / ".pan-requirements.sha256"
    want = hashlib.sha256((REPO / "requirements.txt").read_bytes()).hexdigest()
    return stamp.is_file() and stamp.read_text().strip() == want


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    prefix = Path(sys.prefix)
    if not venv_is_set_up(prefix):
        pytest.skip(f"{prefix} was not set up by scripts/setup_env.sh; the quickstart would run pip")
    out = tmp_path_factory.mktemp("quickstart")
    env = {**os.environ, "PAN_VENV": str(prefix), "PAN_QUICKSTART_OUT": str(out), "PAN_QUICKSTART_DEVICE": "cpu"}
    env.pop("PAN_QUICKSTART_DATA", None)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh"), "--tiny"], cwd=out, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, proc.stdout


def test_generates_the_dataset_inside_the_output_folder(quickstart):
    out, _ = quickstart
    manifest = json.loads((out / "data" / "dataset.json").read_text())
    assert manifest["videos"] and manifest["size"] == 32
    assert (out / "data" / "val_videolist.txt").is_file()


def test_trains_and_evaluates_the_best_checkpoint(quickstart):
    out, _ = quickstart
    assert (out / "checkpoints" / "pan_lite" / "ckpt.best.pth.tar").is_file()
    for name in ("log.txt", "args.json", "metrics.jsonl"):
        assert (out / "log" / "pan_lite" / name).is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "log" / "pan_lite").iterdir())
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["num_videos"] == 12 and 0 <= metrics["top1"] <= 100


def test_classifies_one_video_file_with_the_demo(quickstart):
    out, stdout = quickstart
    demo = (out / "demo.txt").read_text()
    assert "video_000024.mp4" in demo and "top-5:" in demo and "PA + network" in demo
    assert "true class: moving something left" in stdout


def test_writes_the_pa_picture(quickstart):
    out, _ = quickstart
    with Image.open(out / "pa_maps.png") as png:
        assert png.format == "PNG"
        width, height = png.size
    assert width > 2 * height > 0  # frames, untrained maps and trained maps side by side


def test_ends_with_a_summary_of_where_everything_is(quickstart):
    out, stdout = quickstart
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "tiny"
    assert set(summary["seconds"]) == {"data", "train", "evaluate", "demo", "pictures", "total"}
    text = (out / "summary.txt").read_text()
    assert stdout.rstrip().endswith(text.rstrip())
    for what in ("log.txt", "tensorboard --logdir", "ckpt.best.pth.tar", "pa_maps.png", "top-1"):
        assert what in text
    assert (out / "quickstart.log").read_text().count("===") == 5


def test_refuses_unknown_arguments():
    if not venv_is_set_up(Path(sys.prefix)):
        pytest.skip("the environment was not set up by scripts/setup_env.sh")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh"), "--fast"],
                          env={**os.environ, "PAN_VENV": sys.prefix}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--fast" in proc.stderr


# --------------------------------------------------------------------------- the comparison's table


def test_pair_and_direction_accuracy_separate_the_kind_of_motion_from_its_direction():
    from tools.compare_models import pair_scores

    labels = np.array([0, 1, 2, 3])
    scores = pair_scores(np.array([1, 1, 2, 5]), labels, num_class=6)
    assert scores.top1 == 50.0 and scores.pair == 75.0
    assert scores.direction == pytest.approx(200 / 3)
    assert scores.per_pair[0] == 50.0 and scores.per_pair[1] == 100.0 and np.isnan(scores.per_pair[2])
    # A model blind to the order of frames: always the right pair, the direction a coin flip.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, size=4000)
    blind = pair_scores((labels // 2) * 2 + rng.integers(0, 2, size=4000), labels, num_class=12)
    assert blind.pair == 100.0 and blind.direction == pytest.approx(50, abs=3)


def test_results_table_reads_test_models_outputs(tmp_path):
    from tools import compare_models

    eval_dir, log_dir = tmp_path / "eval", tmp_path / "log"
    eval_dir.mkdir()
    log_dir.mkdir()
    scores = np.eye(4)[[0, 1, 1, 3]]
    np.savez(eval_dir / "scores.npz", scores=scores, labels=np.array([0, 1, 2, 3]), indices=np.arange(4))
    (log_dir / "log.txt").write_text("2026-01-01 10:00:00,000 INFO main: run\n"
                                     "2026-01-01 10:07:30,000 INFO main: done\n")
    out = tmp_path / "results.md"
    status = compare_models.main(compare_models.get_args_parser().parse_args(
        ["--out", str(out), "--model", f"TSN={eval_dir}:{log_dir}", "--note", "tiny"]))
    assert status == 0
    text = out.read_text()
    assert "| TSN | 75.0 | 75.0 | 100.0 | 7m30s |" in text
    assert "| TSN | 100.0 | 100.0 |" in text and "- tiny" in text


def _one_model_eval(tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    np.savez(eval_dir / "scores.npz", scores=np.eye(4)[[0, 1, 1, 3]], labels=np.array([0, 1, 2, 3]),
             indices=np.arange(4))
    return eval_dir


def test_results_table_goes_between_the_readme_markers_and_nowhere_else(tmp_path):
    from tools import compare_models

    eval_dir = _one_model_eval(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{compare_models.README_BEGIN}\nold table\n{compare_models.README_END}\n"
                      "after\n")
    args = ["--out", str(tmp_path / "results.md"), "--model", f"TSN={eval_dir}", "--readme", str(readme)]
    for _ in range(2):  # a second run replaces its own table
        assert compare_models.main(compare_models.get_args_parser().parse_args(args)) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{compare_models.README_END}\nafter\n")
    assert "old table" not in text and text.count("| TSN | 75.0 | 75.0 | 100.0 | n/a |") == 1


def test_a_readme_without_markers_is_refused_before_anything_is_written(tmp_path, caplog):
    from tools import compare_models

    eval_dir = _one_model_eval(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    out = tmp_path / "results.md"
    status = compare_models.main(compare_models.get_args_parser().parse_args(
        ["--out", str(out), "--model", f"TSN={eval_dir}", "--readme", str(readme)]))
    assert status == 2 and str(readme) in caplog.text and "compare-results:begin" in caplog.text
    assert readme.read_text() == "# no markers\n" and not out.exists()
