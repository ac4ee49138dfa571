"""ops/evaluation.py: metrics, view and ensemble fusion, sharding without padding, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ops import evaluation as ev
from ops.files import atomic_write

SCORES = np.array(
    [
        [0.9, 0.05, 0.03, 0.01, 0.005, 0.005],  # label 0: top-1 hit
        [0.1, 0.2, 0.3, 0.4, 0.0, 0.0],  # label 1: 3rd best -> top-5 hit only
        [0.0, 0.0, 0.0, 0.0, 0.1, 0.9],  # label 4: 2nd best
        [0.6, 0.1, 0.1, 0.1, 0.05, 0.05],  # label 5: last -> miss
    ],
    dtype=np.float32,
)
LABELS = np.array([0, 1, 4, 5])


def test_topk_accuracy_in_percent():
    assert ev.topk_accuracy(SCORES, LABELS, 1) == 25.0
    assert ev.topk_accuracy(SCORES, LABELS, 5) == 75.0
    assert ev.topk_accuracy(SCORES[:, :3], np.array([0, 1, 2, 2]), 5) == 100.0  # k capped at C


def test_mean_class_accuracy_averages_per_class_recall_over_present_classes():
    scores = np.eye(3, dtype=np.float32)[[0, 0, 1, 2, 0]]  # predictions 0,0,1,2,0
    labels = np.array([0, 0, 1, 1, 1])  # class 0: 2/2, class 1: 1/3, class 2: absent
    confusion = ev.class_confusion(scores.argmax(1), labels, 3)
    assert confusion.tolist() == [[2, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert ev.mean_class_accuracy(confusion) == pytest.approx(100 * (1 + 1 / 3) / 2)
    metrics, _ = ev.compute_metrics(scores, labels, 3, num_skipped=2)
    assert metrics.as_dict() == {"top1": 60.0, "top5": 100.0, "mean_class_accuracy": pytest.approx(66.6666667),
                                 "num_videos": 5, "num_skipped": 2}


def test_fuse_views_average_and_max():
    views = torch.tensor([[[1.0, 4.0], [3.0, 0.0]]])  # one video, two views
    assert ev.fuse_views(views, "avg").tolist() == [[2.0, 2.0]]
    assert ev.fuse_views(views, "max").tolist() == [[3.0, 4.0]]
    with pytest.raises(ValueError, match="unknown crop fusion"):
        ev.fuse_views(views, "median")


def test_ensemble_is_the_weighted_sum_and_softmax_is_applied_per_model():
    a, b = SCORES, SCORES[::-1].copy()
    np.testing.assert_allclose(ev.fuse_ensemble([a, b], [1.0, 0.5]), a + 0.5 * b)
    runs = [ev.Predictions(np.arange(4), s, LABELS) for s in (a, b)]
    fused = ev.ensemble_predictions(runs, [2, 1], True, ["a", "b"])
    def softmax(s):  # written here, not the project's
        e = np.exp(s.astype(np.float64) - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    np.testing.assert_allclose(fused.scores, 2 * softmax(a) + softmax(b), rtol=1e-6)
    np.testing.assert_allclose(ev.softmax(a), softmax(a), rtol=1e-6)


def test_ensemble_refuses_runs_that_disagree_on_the_videos():
    runs = [ev.Predictions(np.arange(4), SCORES, LABELS), ev.Predictions(np.arange(4), SCORES, LABELS[::-1].copy())]
    with pytest.raises(ValueError, match="a and b were evaluated on different lists"):
        ev.ensemble_predictions(runs, None, False, ["a", "b"])


def test_ensemble_leaves_out_videos_any_model_skipped():
    first = ev.Predictions(np.array([0, 2, 3]), SCORES[[0, 2, 3]], LABELS[[0, 2, 3]], {1: "x: bad"})
    second = ev.Predictions(np.array([0, 1, 2]), SCORES[[0, 1, 2]], LABELS[[0, 1, 2]], {3: "y: bad"})
    fused = ev.ensemble_predictions([first, second], None, False, ["a", "b"])
    assert fused.indices.tolist() == [0, 2] and sorted(fused.skipped) == [1, 3]


@pytest.mark.parametrize("num_videos, world", [(5, 2), (7, 3), (2, 4), (8, 1)])
def test_shards_cover_every_video_exactly_once_without_padding(num_videos, world):
    shards = [ev.shard_indices(num_videos, rank, world) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(num_videos))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_gather_checks_that_each_video_is_counted_once():
    local = ev.Predictions(np.array([2, 0]), SCORES[[2, 0]], LABELS[[2, 0]], {1: "p: bad"})
    merged = ev.gather_predictions(local, 3)
    assert merged.indices.tolist() == [0, 2] and merged.labels.tolist() == [0, 4]
    with pytest.raises(RuntimeError, match=r"never counted \[3\]"):
        ev.gather_predictions(local, 4)
    twice = ev.Predictions(np.array([0, 0, 1]), SCORES[:3], LABELS[:3])
    with pytest.raises(RuntimeError, match=r"more than once \[0\]"):
        ev.gather_predictions(twice, 2)


def test_outputs_are_written_atomically_and_read_back(tmp_path):
    preds = ev.Predictions(np.arange(4), SCORES, LABELS, {})
    metrics, confusion = ev.compute_metrics(SCORES, LABELS, 6)
    paths = ev.save_results(str(tmp_path), preds, [f"v{i}" for i in range(4)], metrics, confusion, {"note": 1})
    with np.load(paths["scores"]) as saved:
        np.testing.assert_array_equal(saved["scores"], SCORES)
        assert saved["videos"].tolist() == ["v0", "v1", "v2", "v3"]
    assert np.loadtxt(paths["confusion"], delimiter=",").shape == (6, 6)
    assert json.loads(open(paths["metrics"]).read())["note"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion_matrix.csv", "metrics.json", "scores.npz"]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def explode(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(target), explode)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_unwritable_output_folder_is_reported_by_name(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=f"output folder {blocker}/out is not writable"):
        ev.OutputFolder(str(blocker / "out"))


def test_submission_rows_use_category_names_best_first():
    preds = ev.Predictions(np.arange(2), SCORES[:2], LABELS[:2])
    names = list("abcdef")
    assert ev.submission_rows(preds, ["x", "y"], names, 1) == [["x", "a"], ["y", "d"]]
    assert ev.submission_rows(preds, ["x", "y"], names, 3)[1] == ["y", "d", "c", "b"]
    with pytest.raises(ValueError, match="2 category names for 6 classes"):
        ev.submission_rows(preds, ["x", "y"], names[:2], 1)
