"""test_models.py end to end on a tiny dataset: every view option, ensembles, released files,
submission files, bad samples, and checkpoints that do not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import test_models
from ops.dataset import SampleLoadError
from ops.weights import CheckpointError
from tests.eval_support import (
    CATEGORIES,
    NUM_CLASS,
    eval_args,
    make_dataset,
    run_eval,
    save_ours,
    save_released,
    tiny_model,
)

NUM_VIDEOS = 4


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over classes, written here in float64 (not the project's own)."""
    e = np.exp(scores.astype(np.float64) - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The dataset and our-format checkpoints of a Lite, an RGB and a PA model."""
    root = make_dataset(tmp_path_factory.mktemp("data"), NUM_VIDEOS)
    ckpts = tmp_path_factory.mktemp("ckpt")
    models = {m: tiny_model(m, seed=i) for i, m in enumerate(("Lite", "RGB", "PA"))}
    paths = {m: save_ours(ckpts / f"{m}.pth.tar", model) for m, model in models.items()}
    return root, models, paths


# ---------------------------------------------------------------- the published test pipeline, by hand
#
# Everything the expected scores need is written here as numbers, not taken from
# the code under test. The tiny videos have 10 frames (1.jpg .. 10.jpg, 32x32);
# the models have 4 segments; RGB reads 1 frame per segment, Lite and PA 4.

#: ImageNet normalisation of the published pipeline.
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
#: --input_size 32: the frames are resized to 32 * 256 // 224 = 36 (shorter side), then cropped.
RESIZED, CROP = 36, 32

# Frame numbers (1-based) of each temporal view, one list per segment.
# RGB, 10 frames, 4 segments: tick 10/4 = 2.5; centres int(1.25 + 2.5 k) = 1, 3, 6, 8 -> frames 2, 4, 7, 9;
# starts (twice_sample's second view) int(2.5 k) = 0, 2, 5, 7 -> frames 1, 3, 6, 8.
RGB_CENTRES = [[2], [4], [7], [9]]
# --num_clips 2: view k at (2k+1)/4 of each span: int(0.625 + 2.5 j) = 0, 3, 5, 8 and int(1.875 + 2.5 j) = 1, 4, 6, 9.
RGB_TWO_CLIPS = [[[1], [4], [6], [9]], [[2], [5], [7], [10]]]
# --dense_sample: a 64-frame window with stride 64 / 4 = 16 from frame 0, wrapped over the 10 frames:
# 0, 16 % 10, 32 % 10, 48 % 10 = 0, 6, 2, 8 -> frames 1, 7, 3, 9; the 10 window starts all fall on 0.
RGB_DENSE = [[1], [7], [3], [9]]
# Lite / PA, 4 frames per segment: 10 - 4 + 1 = 7 start frames, tick 7/4 = 1.75;
# centres int(0.875 + 1.75 k) = 0, 2, 4, 6; starts int(1.75 k) = 0, 1, 3, 5; 4 frames from each.
M4_CENTRES = [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8], [7, 8, 9, 10]]
M4_STARTS = [[1, 2, 3, 4], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]

# Crops (x, y, size, mirrored) on the 36x36 resized frame.
CENTRE = [(2, 2, CROP, False)]  # round((36 - 32) / 2) = 2
# 3 crops: step (36 - 32) // 4 = 1; left (0, 2 steps), right (4 steps, 2 steps), centre (2, 2).
THREE = [(0, 2, CROP, False), (4, 2, CROP, False), (2, 2, CROP, False)]
# 3 crops with --full_res: crops of 36 on a 36x36 frame: the whole frame, three times.
THREE_FULL = [(0, 0, RESIZED, False)] * 3
# 5 crops: the 4 corners (step 1: 0 or 4) and the centre; 10 crops: each of them and its mirror image.
FIVE = [(0, 0, CROP, False), (4, 0, CROP, False), (0, 4, CROP, False), (4, 4, CROP, False), (2, 2, CROP, False)]
TEN = [(x, y, s, mirrored) for x, y, s, _ in FIVE for mirrored in (False, True)]


def resized_frame(root, video: int, number: int) -> Image.Image:
    img = Image.open(root / "frames" / f"video{video}" / f"{number:05d}.jpg").convert("RGB")
    return img.resize((RESIZED, RESIZED), Image.BILINEAR)


def view_scores(model, root, video: int, temporal_views, crops) -> np.ndarray:
    """The model's scores ``[V, C]`` of every (crop, temporal view) pair of one video, inputs built here."""
    clips = []
    for x, y, size, mirrored in crops:
        for segments in temporal_views:
            planes = []
            for number in (n for segment in segments for n in segment):
                crop = resized_frame(root, video, number).crop((x, y, x + size, y + size))
                if mirrored:
                    crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
                rgb = (np.asarray(crop, dtype=np.float64) / 255.0 - MEAN) / STD  # [H, W, 3]
                planes.extend(rgb.transpose(2, 0, 1))
            clips.append(np.stack(planes))
    with torch.no_grad():
        return model(torch.tensor(np.stack(clips), dtype=torch.float32)).numpy()


def fused_by_hand(model, root, temporal_views, crops, fusion: str = "avg") -> np.ndarray:
    """``[NUM_VIDEOS, C]``: per video, the mean (or the elementwise max) over its views."""
    fuse = {"avg": lambda s: s.mean(0), "max": lambda s: s.max(0)}[fusion]
    return np.stack([fuse(view_scores(model, root, v, temporal_views, crops)) for v in range(NUM_VIDEOS)])


def assert_scores_close(actual: np.ndarray, expected: np.ndarray) -> None:
    # float32 pipelines against float64 inputs: rounding only, relative to the scores' scale.
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))


def test_scores_are_the_mean_over_crops_and_clips_of_the_model_outputs(setup, tmp_path):
    root, models, paths = setup
    metrics, saved = run_eval(root, paths["Lite"], tmp_path, "--test_crops", "3", "--twice_sample")
    expected = fused_by_hand(models["Lite"], root, [M4_CENTRES, M4_STARTS], THREE)
    assert_scores_close(saved["scores"], expected)
    assert saved["labels"].tolist() == [i % NUM_CLASS for i in range(NUM_VIDEOS)]
    assert saved["videos"].tolist() == [f"frames/video{i}" for i in range(NUM_VIDEOS)]
    assert metrics["num_videos"] == NUM_VIDEOS
    top1 = 100 * np.mean(expected.argmax(1) == saved["labels"])
    assert metrics["top1"] == pytest.approx(top1)


@pytest.mark.parametrize(
    "extra, temporal_views, crops, fusion",
    [
        (("--test_crops", "10"), [RGB_CENTRES], TEN, "avg"),
        (("--test_crops", "3", "--full_res"), [RGB_CENTRES], THREE_FULL, "avg"),
        (("--dense_sample",), [RGB_DENSE] * 10, CENTRE, "avg"),
        (("--num_clips", "2"), RGB_TWO_CLIPS, CENTRE, "avg"),
        (("--crop_fusion_type", "max", "--test_crops", "5"), [RGB_CENTRES], FIVE, "max"),
    ],
    ids=["10 crops", "3 full-res crops", "dense", "2 clips", "max over 5 crops"],
)
def test_every_view_option_gives_the_published_views_fused(setup, tmp_path, extra, temporal_views, crops, fusion):
    root, models, paths = setup
    metrics, saved = run_eval(root, paths["RGB"], tmp_path, *extra)
    assert_scores_close(saved["scores"], fused_by_hand(models["RGB"], root, temporal_views, crops, fusion))
    assert metrics["num_videos"] == NUM_VIDEOS
    assert saved["indices"].tolist() == list(range(NUM_VIDEOS))
    confusion = np.loadtxt(tmp_path / "confusion_matrix.csv", delimiter=",")
    predicted = saved["scores"].argmax(1)
    assert confusion.tolist() == [[float(np.sum((saved["labels"] == t) & (predicted == p))) for p in range(NUM_CLASS)]
                                  for t in range(NUM_CLASS)]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["top1"] == metrics["top1"] == pytest.approx(100 * np.mean(predicted == saved["labels"]))
    assert written["num_videos"] == NUM_VIDEOS
    assert json.loads((tmp_path / "args.json").read_text())["dataset"] == "something"
    assert not list(tmp_path.glob(".*tmp")), "temporary files left behind"


@pytest.fixture(scope="module")
def single_runs(setup, tmp_path_factory):
    """Scores of the Lite and the RGB model alone, default options (one centre crop, one clip)."""
    root, _, paths = setup
    return {m: run_eval(root, paths[m], tmp_path_factory.mktemp(m))[1] for m in ("Lite", "RGB")}


def test_ensemble_sums_each_models_softmax_scores_with_the_coefficients(setup, single_runs, tmp_path):
    root, _, paths = setup
    lite, rgb = single_runs["Lite"], single_runs["RGB"]
    _, soft = run_eval(root, [paths["Lite"], paths["RGB"]], tmp_path / "soft", "--coeff", "1,0.5", "--softmax")
    np.testing.assert_allclose(soft["scores"], softmax(lite["scores"]) + 0.5 * softmax(rgb["scores"]), atol=1e-6)


def test_ensemble_of_three_modalities_sums_the_single_model_evaluations(setup, tmp_path):
    # PAN En: Lite + RGB + PA with --full_res --twice_sample; each reads its own frames (1 or 4 per segment),
    # so each model's share of the sum equals its evaluation alone.
    root, _, paths = setup
    views = ("--full_res", "--twice_sample")
    alone = [run_eval(root, paths[m], tmp_path / m, *views)[1]["scores"] for m in ("Lite", "RGB", "PA")]
    weights = [paths["Lite"], paths["RGB"], paths["PA"]]
    metrics, summed = run_eval(root, weights, tmp_path / "sum", *views, "--test_segments", "4,4,4")
    assert metrics["num_videos"] == NUM_VIDEOS and summed["scores"].shape == (NUM_VIDEOS, NUM_CLASS)
    np.testing.assert_allclose(summed["scores"], alone[0] + alone[1] + alone[2], rtol=1e-6, atol=1e-5)
    _, soft = run_eval(root, weights, tmp_path / "soft", *views, "--test_segments", "4,4,4", "--softmax")
    np.testing.assert_allclose(soft["scores"], sum(softmax(s) for s in alone), atol=1e-6)
    assert not np.allclose(alone[0], alone[1]) and not np.allclose(alone[1], alone[2])  # three different models


def test_ensemble_refuses_wrong_number_of_coefficients(setup, tmp_path):
    root, _, paths = setup
    with pytest.raises(test_models.UsageError, match="--coeff has 3 values for 2 checkpoints"):
        run_eval(root, [paths["Lite"], paths["RGB"]], tmp_path, "--coeff", "1,1,1")


def test_released_checkpoint_is_described_by_its_file_name_and_gives_the_same_scores(setup, single_runs, tmp_path):
    root, models, _ = setup
    released = save_released(tmp_path, models["Lite"])
    _, theirs = run_eval(root, released, tmp_path / "released", "--VAP")
    np.testing.assert_array_equal(theirs["scores"], single_runs["Lite"]["scores"])


def test_released_name_contradicting_the_keys_is_refused(setup, tmp_path):
    root, models, _ = setup
    released = save_released(tmp_path, models["Lite"])
    mislabelled = released.rename(tmp_path / released.name.replace("PAN_Lite_", "PAN_RGB_"))
    with pytest.raises(CheckpointError, match="(?s)file name says modality=.RGB..*imply modality='Lite'"):
        run_eval(root, mislabelled, tmp_path / "out")


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--modality", "RGB"), r"(?s)unexpected in checkpoint .*PA\.shallow_conv\.weight.*likely cause: modality"),
        (("--num_class", "5"), r"(?s)different shapes .*base_model\.fc\.pred\.weight.*class count"),
        (("--test_segments", "8"), r"(?s)different shapes .*base_model\.fc\.TES"),
        (("--arch", "resnet34"), r"missing in checkpoint"),
    ],
    ids=["modality", "classes", "segments", "arch"],
)
def test_checkpoint_that_does_not_fit_is_refused_with_keys_listed(setup, tmp_path, extra, message):
    root, _, paths = setup
    with pytest.raises(CheckpointError, match=message):
        run_eval(root, paths["Lite"], tmp_path, *extra)


@pytest.mark.parametrize("dataset, columns", [("something", 1), ("somethingv2", NUM_CLASS)])
def test_csv_submission_names_the_best_categories(setup, tmp_path, dataset, columns):
    root, _, paths = setup
    csv_path = tmp_path / "submission.csv"
    args = eval_args(root, paths["RGB"], tmp_path, "--csv_file", str(csv_path), "--image_tmpl", "{:05d}.jpg")
    args.dataset = dataset  # somethingv2: top-5 (here all 3 classes), best first
    test_models.main(args)
    scores = np.load(tmp_path / "scores.npz")["scores"]
    rows = [line.split(";") for line in csv_path.read_text().splitlines()]
    assert [r[0] for r in rows] == [f"video{i}" for i in range(NUM_VIDEOS)]
    for row, video_scores in zip(rows, scores):
        assert row[1:] == [CATEGORIES[c] for c in np.argsort(-video_scores)[:columns]]


@pytest.fixture
def broken_root(setup, tmp_path):
    """A copy of the dataset whose second video has a corrupt frame."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(setup[0], root)
    (root / "frames" / "video1" / "00004.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_bad_sample_stops_evaluation_naming_the_file(setup, broken_root, tmp_path):
    with pytest.raises(SampleLoadError, match=r"video1/00004\.jpg.*--skip-bad"):
        run_eval(broken_root, setup[2]["RGB"], tmp_path / "out")
    assert not (tmp_path / "out" / "scores.npz").exists()


def test_skip_bad_leaves_the_video_out_and_reports_it(setup, broken_root, tmp_path):
    metrics, saved = run_eval(broken_root, setup[2]["RGB"], tmp_path / "out", "--skip-bad")
    assert metrics["num_videos"] == NUM_VIDEOS - 1 and metrics["num_skipped"] == 1
    assert saved["indices"].tolist() == [0, 2, 3]
    skipped = json.loads((tmp_path / "out" / "metrics.json").read_text())["skipped"]
    assert list(skipped) == ["frames/video1"] and "00004.jpg" in skipped["frames/video1"]


def test_max_num_evaluates_the_first_videos_only(setup, tmp_path):
    metrics, saved = run_eval(setup[0], setup[2]["RGB"], tmp_path, "--max_num", "2")
    assert metrics["num_videos"] == 2 and saved["indices"].tolist() == [0, 1]


def test_published_flags_parse(setup, tmp_path):
    args = eval_args(setup[0], setup[2]["RGB"], tmp_path, "--gpus", "0", "1", "--no-VAP", "--softmax")
    assert args.gpus == [0, 1] and args.VAP is False and args.softmax


def test_unwritable_output_folder_stops_before_any_model_or_data_is_loaded(setup, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    missing_weights = tmp_path / "never_read.pth.tar"  # would fail later if reached
    with pytest.raises(OSError, match=f"output folder {blocker}/out is not writable"):
        run_eval(setup[0], missing_weights, blocker / "out")
