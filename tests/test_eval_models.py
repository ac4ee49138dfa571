"""test_models.py end to end on a tiny dataset: every view option, ensembles, released files,
submission files, bad samples, and checkpoints that do not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import test_models
from ops.checkpoint import CheckpointError
from ops.dataset import SampleLoadError
from tests.test_eval_helpers import (
    CATEGORIES,
    NUM_CLASS,
    eval_args,
    make_dataset,
    one_thread,  # noqa: F401 -- autouse fixture
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


def manual_scores(model, root, args) -> np.ndarray:
    """Per-video scores computed by hand: every view through the model, then the mean over views."""
    cfg = test_models.get_dataset_config("something", str(root), val_list="val.txt", num_class=NUM_CLASS)
    dataset = test_models.build_dataset(model, cfg, model.num_segments, args)
    out = []
    with torch.no_grad():
        for i in range(len(dataset)):
            x, _ = dataset[i]
            views = x.reshape(-1, model.num_segments * model.new_length * 3, *x.shape[-2:])
            out.append(model(views).mean(0).numpy())
    return np.stack(out)


def test_scores_are_the_mean_over_crops_and_clips_of_the_model_outputs(setup, tmp_path):
    root, models, paths = setup
    extra = ("--test_crops", "3", "--twice_sample")
    metrics, saved = run_eval(root, paths["Lite"], tmp_path, *extra)
    expected = manual_scores(models["Lite"], root, eval_args(root, paths["Lite"], tmp_path, *extra))
    np.testing.assert_allclose(saved["scores"], expected, rtol=1e-4, atol=1e-5)
    assert saved["labels"].tolist() == [i % NUM_CLASS for i in range(NUM_VIDEOS)]
    assert saved["videos"].tolist() == [f"frames/video{i}" for i in range(NUM_VIDEOS)]
    assert metrics["num_videos"] == NUM_VIDEOS
    top1 = 100 * np.mean(expected.argmax(1) == saved["labels"])
    assert metrics["top1"] == pytest.approx(top1)


@pytest.mark.parametrize(
    "extra",
    [
        ("--test_crops", "10"),
        ("--test_crops", "3", "--full_res"),
        ("--dense_sample",),
        ("--num_clips", "2"),
        ("--crop_fusion_type", "max", "--test_crops", "5"),
    ],
    ids=lambda e: " ".join(e),
)
def test_every_view_option_evaluates_each_video_once(setup, tmp_path, extra):
    root, _, paths = setup
    metrics, saved = run_eval(root, paths["RGB"], tmp_path, *extra)
    assert metrics["num_videos"] == NUM_VIDEOS
    assert saved["scores"].shape == (NUM_VIDEOS, NUM_CLASS) and np.isfinite(saved["scores"]).all()
    assert saved["indices"].tolist() == list(range(NUM_VIDEOS))
    confusion = np.loadtxt(tmp_path / "confusion_matrix.csv", delimiter=",")
    assert confusion.shape == (NUM_CLASS, NUM_CLASS) and confusion.sum() == NUM_VIDEOS
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["top1"] == metrics["top1"] and written["num_videos"] == NUM_VIDEOS
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


def test_ensemble_of_three_modalities_with_per_model_segments(setup, tmp_path):
    # PAN En: Lite + RGB + PA with --full_res --twice_sample; each reads its own frames.
    root, _, paths = setup
    weights = [paths["Lite"], paths["RGB"], paths["PA"]]
    metrics, saved = run_eval(root, weights, tmp_path, "--full_res", "--twice_sample", "--test_segments", "4,4,4")
    assert metrics["num_videos"] == NUM_VIDEOS and saved["scores"].shape == (NUM_VIDEOS, NUM_CLASS)


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
