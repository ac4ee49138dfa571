"""tools/demo.py: one video (file or frame folder) in, the top-5 classes and stage times out.

The checkpoints here are random-init tiny models (resnet18, 4 segments, 32x32):
what is specified is the plumbing -- sampling, decoding, class names, refusals
-- not accuracy.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ops.models import PAN
from ops.inference import load_checkpoint_model
from tests.helpers import REPO
from tools import demo
from tools.make_synthetic import CLASS_NAMES, render_video, video_rng, write_mp4

SIZE, FRAMES, SEGMENTS = 32, 16, 4


def write_clip(folder: Path, class_index: int = 0, seed: int = 0) -> tuple[Path, Path]:
    """One synthetic video of ``class_index`` as an mp4 file and as a frame folder; returns both paths."""
    video = render_video(class_index, video_rng(seed, "val", class_index), size=SIZE, num_frames=FRAMES)
    frames = folder / f"frames_{class_index}"
    frames.mkdir(parents=True)
    for i, frame in enumerate(video, 1):
        Image.fromarray(frame).save(frames / f"img_{i:05d}.jpg", quality=90)
    mp4 = folder / f"video_{class_index}.mp4"
    write_mp4(mp4, video)
    return mp4, frames


def write_categories(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return path


def save_random_checkpoint(path: Path, num_class: int = len(CLASS_NAMES), modality: str = "Lite",
                           seed: int = 0, **saved_args) -> Path:
    """A checkpoint in the trainer's format (config fields, saved args) holding a random-init model."""
    torch.manual_seed(seed)
    model = PAN(num_class, SEGMENTS, modality, base_model="resnet18", pretrain=None, partial_bn=False,
                dropout=0.5, is_shift=True, has_VAP=True)
    torch.save({"epoch": 1, "arch": "resnet18", "modality": modality, "num_segments": SEGMENTS,
                "model_config": model.config(), "state_dict": model.state_dict(),
                "args": {"crop_size": SIZE, "scale_size": SIZE, **saved_args}}, path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo")
    mp4, frames = write_clip(root)
    return {
        "mp4": mp4,
        "frames": frames,
        "categories": write_categories(root / "category.txt", CLASS_NAMES),
        "weights": save_random_checkpoint(root / "lite.pth.tar"),
    }


def run_demo(capsys, *argv: object) -> tuple[int, str]:
    status = demo.main(demo.get_args_parser().parse_args([str(a) for a in argv]))
    return status, capsys.readouterr().out


@pytest.mark.parametrize("kind", ["mp4", "frames"])
def test_prints_top5_names_probabilities_and_stage_times(clip, capsys, kind):
    status, out = run_demo(capsys, clip[kind], "--weights", clip["weights"], "--categories", clip["categories"])
    assert status == 0
    lines = out.splitlines()
    top = lines[lines.index("top-5:") + 1:][:5]
    assert len(top) == 5
    probabilities = []
    for rank, line in enumerate(top, 1):
        assert line.strip().startswith(f"{rank}. ")
        assert any(name in line for name in CLASS_NAMES)
        probabilities.append(float(line.rsplit(None, 1)[-1].rstrip("%")))
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 100.01
    timing = next(line for line in lines if line.startswith("time per stage"))
    for stage in ("decode", "preprocessing", "PA + network", "total"):
        assert stage in timing
    assert f"{FRAMES} frames" in out and f"{SEGMENTS} segments x 4 frames" in out


def test_classify_samples_every_segment_and_averages_views(clip):
    model, _, _ = load_checkpoint_model(str(clip["weights"]))
    options = demo.InferenceOptions()
    device = torch.device("cpu")
    one = demo.classify(model, str(clip["frames"]), CLASS_NAMES, device, options, SIZE, SIZE)
    assert one.probabilities.shape == (len(CLASS_NAMES),)
    assert one.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert one.views == 1
    many = demo.classify(model, str(clip["frames"]), CLASS_NAMES, device, options, SIZE, SIZE,
                         test_crops=3, num_clips=2)
    assert many.views == 6
    assert many.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_sampling_takes_m_consecutive_frames_from_the_centre_of_each_span():
    numbers = demo.sample_frame_numbers(num_frames=16, num_segments=4, new_length=4)
    # 13 valid starts, 4 spans of 3.25 frames: centres at 1, 4, 8, 11 (0-based) -> frames from 2, 5, 9, 12.
    assert numbers.tolist() == [2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 11, 12, 12, 13, 14, 15]
    short = demo.sample_frame_numbers(num_frames=3, num_segments=2, new_length=4)
    assert short.max() == 3  # the last frame repeats rather than reading past the end


def test_fast_path_flags_give_the_same_classes(clip, capsys):
    _, plain = run_demo(capsys, clip["mp4"], "--weights", clip["weights"], "--categories", clip["categories"])
    status, fast = run_demo(capsys, clip["mp4"], "--weights", clip["weights"], "--categories", clip["categories"],
                            "--channels_last", "--fuse_bn")
    assert status == 0
    assert "channels_last+fuse_bn" in fast

    def names(out: str) -> list[str]:
        lines = out.splitlines()
        return [line.split(". ", 1)[1].rsplit(None, 1)[0].strip() for line in lines[lines.index("top-5:") + 1:][:5]]

    assert names(fast)[0] == names(plain)[0]


def test_default_categories_come_from_the_checkpoints_dataset(tmp_path, clip, capsys):
    root = tmp_path / "data"
    root.mkdir()
    write_categories(root / "category.txt", [f"class {i}" for i in range(len(CLASS_NAMES))])
    weights = save_random_checkpoint(tmp_path / "ck.pth.tar", dataset="synthetic", root_path=str(root))
    status, out = run_demo(capsys, clip["mp4"], "--weights", weights)
    assert status == 0
    assert "class " in out and str(root / "category.txt") in out


def test_refuses_a_checkpoint_whose_class_count_differs_from_the_category_file(tmp_path, clip, capsys, caplog):
    categories = write_categories(tmp_path / "ten.txt", [f"class {i}" for i in range(10)])
    with caplog.at_level(logging.ERROR):
        status, out = run_demo(capsys, clip["mp4"], "--weights", clip["weights"], "--categories", categories)
    assert status == 2
    assert "top-5" not in out
    message = caplog.text
    assert "12 classes" in message and "lists 10" in message
    assert str(clip["weights"]) in message and str(categories) in message


def test_refuses_a_missing_input_and_a_frame_folder_with_other_names(tmp_path, clip, capsys, caplog):
    with caplog.at_level(logging.ERROR):
        status, _ = run_demo(capsys, tmp_path / "nothing.mp4", "--weights", clip["weights"],
                             "--categories", clip["categories"])
    assert status == 2 and "nothing.mp4" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        status, _ = run_demo(capsys, clip["frames"], "--weights", clip["weights"],
                             "--categories", clip["categories"], "--image_tmpl", "{:06d}.png")
    assert status == 2 and "000001.png" in caplog.text and "--image_tmpl" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given on a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(clip, capsys, caplog):
    with caplog.at_level(logging.ERROR):
        status, _ = run_demo(capsys, clip["mp4"], "--weights", clip["weights"], "--device", "cuda")
    assert status == 2 and "--device cpu" in caplog.text


# --------------------------------------------------------------------------- unsafe checkpoints


class _CreatesFileWhenUnpickled:
    """Unpickling this object opens (creates) ``marker``: a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_malicious_checkpoint(path: Path, marker: Path) -> Path:
    model = PAN(len(CLASS_NAMES), SEGMENTS, "Lite", base_model="resnet18", pretrain=None, has_VAP=True)
    torch.save({"state_dict": model.state_dict(), "payload": _CreatesFileWhenUnpickled(str(marker))}, path)
    assert not marker.exists()
    return path


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path, clip, capsys, caplog):
    marker = tmp_path / "pwned"
    weights = write_malicious_checkpoint(tmp_path / "evil.pth.tar", marker)
    with caplog.at_level(logging.ERROR):
        status, out = run_demo(capsys, clip["mp4"], "--weights", weights, "--categories", clip["categories"])
    assert status == 2
    assert not marker.exists()
    assert "refused" in caplog.text and str(weights) in caplog.text
    assert "top-5" not in out


def test_a_pickle_payload_is_refused_even_when_the_environment_asks_for_unsafe_loading(tmp_path, clip):
    marker = tmp_path / "pwned"
    weights = write_malicious_checkpoint(tmp_path / "evil.pth.tar", marker)
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), str(clip["mp4"]), "--weights", str(weights),
         "--categories", str(clip["categories"])],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    assert "refused" in proc.stderr
    assert "top-5" not in proc.stdout


def test_frame_count_of_a_folder_stops_at_the_first_gap(tmp_path):
    for i in (1, 2, 3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"img_{i:05d}.jpg")
    assert demo.count_folder_frames(str(tmp_path), "img_{:05d}.jpg") == 3
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img_00005.jpg")
    with pytest.raises(demo.DemoError, match="img_00004.jpg is missing"):
        demo.count_folder_frames(str(tmp_path), "img_{:05d}.jpg")


def test_an_exported_model_gives_the_checkpoints_classes_with_its_own_class_names(clip, capsys, tmp_path):
    from tools import export

    exported = tmp_path / "lite.pt2"
    argv = ["--weights", str(clip["weights"]), "--categories", str(clip["categories"]), "--input_size", str(SIZE),
            "--output", str(tmp_path / "lite"), "--no-parity"]
    assert export.main(export.get_args_parser().parse_args(argv)) == 0 and exported.exists()
    capsys.readouterr()
    _, from_checkpoint = run_demo(capsys, clip["frames"], "--weights", clip["weights"], "--categories",
                                  clip["categories"])
    status, from_export = run_demo(capsys, clip["frames"], "--weights", exported)  # class names from the file
    assert status == 0 and "exported" in from_export

    def top5(out: str) -> list[str]:
        lines = out.splitlines()
        return [line.rsplit(None, 1)[0] for line in lines[lines.index("top-5:") + 1:][:5]]

    assert top5(from_export) == top5(from_checkpoint)
    status, _ = run_demo(capsys, clip["frames"], "--weights", exported, "--fuse_bn")
    assert status == 2
