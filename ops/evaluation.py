"""Video-level evaluation: the multi-view loop, view fusion, ensembles, metrics, sharding and outputs.

Shapes: ``N`` videos, ``V`` views per video (crops x temporal clips), ``C``
classes. Scores are ``float32 [N, C]`` numpy arrays, labels ``int64 [N]``,
video indices ``int64 [N]`` (positions in the list file).

Distributed evaluation shards the list without padding (rank ``r`` of ``W``
takes videos ``r, r + W, ...``), so no video is evaluated twice, and
:func:`gather_predictions` reassembles the shards in list order, checking that
every video appears exactly once.

The loop (:func:`evaluate`) scores the clips of :func:`build_dataset` wrapped
in :class:`IndexedClips` (batched by :func:`collate_clips`): used by
``test_models.py`` and ``tools/bench_inference.py``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ops.dataset import SampleLoadError, TSNDataSet
from ops.dataset_config import DatasetConfig
from ops.errors import PanError
from ops.files import atomic_write, write_text_atomic
from ops.inference import InferenceOptions, run_batch
from ops.transforms import eval_transform

#: The logger of the evaluation's messages (the name test_models.py has always logged them under).
logger = logging.getLogger("test_models")

CROP_FUSION_TYPES = ("avg", "max")


# --------------------------------------------------------------------------- scores


def fuse_views(scores: torch.Tensor, fusion: str = "avg") -> torch.Tensor:
    """``[B, V, C]`` per-view scores -> ``[B, C]`` per-video scores (mean or max over views)."""
    if fusion == "avg":
        return scores.mean(dim=1)
    if fusion == "max":
        return scores.amax(dim=1)
    raise ValueError(f"unknown crop fusion {fusion!r}; choose one of {', '.join(CROP_FUSION_TYPES)}")


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[N, C]`` scores, computed in float64 for stability."""
    shifted = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def fuse_ensemble(scores: Sequence[np.ndarray], coeffs: Sequence[float] | None = None) -> np.ndarray:
    """Weighted sum of each model's ``[N, C]`` scores, the published ensemble rule.

    ``coeffs`` default to 1 each. (With ``--softmax`` the caller applies the
    softmax to each model's scores first.)
    """
    if not scores:
        raise ValueError("an ensemble needs at least one model's scores")
    coeffs = [1.0] * len(scores) if coeffs is None else list(coeffs)
    if len(coeffs) != len(scores):
        raise ValueError(f"{len(coeffs)} coefficients for {len(scores)} models")
    shapes = {s.shape for s in scores}
    if len(shapes) != 1:
        raise ValueError(f"the models' scores differ in shape: {sorted(shapes)}")
    return sum(float(c) * s.astype(np.float32) for c, s in zip(coeffs, scores)).astype(np.float32)


# --------------------------------------------------------------------------- metrics


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percentage of videos whose label is among the ``k`` best scores (``k`` capped at ``C``)."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(100.0 * (top == labels[:, None]).any(axis=1).mean())


def class_confusion(predictions: np.ndarray, labels: np.ndarray, num_class: int) -> np.ndarray:
    """``[C, C]`` confusion matrix, rows = true class, columns = predicted (scikit-learn)."""
    # Imported here: scikit-learn takes seconds to import, and every torchrun worker would pay it.
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, predictions, labels=np.arange(num_class))


def mean_class_accuracy(confusion: np.ndarray) -> float:
    """Mean over classes of per-class recall, in percent.

    Classes with no video in the evaluated set are left out of the mean (the
    published code averaged their NaN into the figure).
    """
    counts = confusion.sum(axis=1)
    present = counts > 0
    if not present.any():
        return float("nan")
    return float(100.0 * (np.diag(confusion)[present] / counts[present]).mean())


@dataclass
class Metrics:
    """The figures reported for one evaluation."""

    #: Percentages; None when no video was evaluated.
    top1: float | None
    top5: float | None
    mean_class_accuracy: float | None
    num_videos: int
    #: Videos left out by ``--skip-bad`` (not part of the figures above).
    num_skipped: int = 0

    def as_dict(self) -> dict:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_accuracy": self.mean_class_accuracy,
            "num_videos": self.num_videos,
            "num_skipped": self.num_skipped,
        }


def compute_metrics(scores: np.ndarray, labels: np.ndarray, num_class: int, num_skipped: int = 0) -> tuple[Metrics, np.ndarray]:
    """Top-1, top-5 and mean class accuracy of ``[N, C]`` scores; returns the metrics and the confusion matrix.

    With no video (all left out by ``--skip-bad``, or ``--max_num 0``) the
    accuracies are ``None`` and the confusion matrix is all zeros.
    """
    if len(labels) == 0:
        return Metrics(None, None, None, 0, num_skipped), np.zeros((num_class, num_class), dtype=np.int64)
    confusion = class_confusion(scores.argmax(axis=1), labels, num_class)
    metrics = Metrics(
        top1=topk_accuracy(scores, labels, 1),
        top5=topk_accuracy(scores, labels, 5),
        mean_class_accuracy=mean_class_accuracy(confusion),
        num_videos=int(len(labels)),
        num_skipped=num_skipped,
    )
    return metrics, confusion


# --------------------------------------------------------------------------- distributed


def shard_indices(num_videos: int, rank: int, world_size: int) -> list[int]:
    """Videos of one process: ``rank, rank + world_size, ...`` (no padding, no repeats)."""
    return list(range(rank, num_videos, world_size))


@dataclass
class Predictions:
    """One model's per-video results on (part of) a list, in list order after gathering.

    ``skipped`` maps a list index to ``"path: reason"`` for videos left out by ``--skip-bad``.
    """

    indices: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    skipped: dict[int, str] = field(default_factory=dict)

    @classmethod
    def empty(cls, num_class: int) -> "Predictions":
        return cls(np.zeros(0, np.int64), np.zeros((0, num_class), np.float32), np.zeros(0, np.int64))

    def sorted(self) -> "Predictions":
        order = np.argsort(self.indices, kind="stable")
        return Predictions(self.indices[order], self.scores[order], self.labels[order], dict(self.skipped))

    def select(self, keep: np.ndarray) -> "Predictions":
        """The videos whose index is in ``keep`` (sorted indices)."""
        mask = np.isin(self.indices, keep)
        return Predictions(self.indices[mask], self.scores[mask], self.labels[mask], dict(self.skipped))


def first_occurrences(paths: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """The list positions to evaluate, each video once, and the ``(repeat, first)`` position pairs left out.

    A list that names a video twice would otherwise count it twice.
    """
    first: dict[str, int] = {}
    keep, repeats = [], []
    for i, path in enumerate(paths):
        if path in first:
            repeats.append((i, first[path]))
        else:
            first[path] = i
            keep.append(i)
    return keep, repeats


def gather_predictions(local: Predictions, num_videos: int | Sequence[int]) -> Predictions:
    """All processes' predictions in list order (a no-op without a process group).

    Checks that every expected video (``range(num_videos)``, or the given list
    positions) was either scored or skipped exactly once across processes.

    Raises:
        RuntimeError: a video was scored twice or by no process.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list = [None] * dist.get_world_size()
        payload = (local.indices, local.scores, local.labels, local.skipped)
        dist.all_gather_object(parts, payload)
        merged = Predictions(
            np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.float32),
            np.concatenate([p[2] for p in parts]).astype(np.int64),
            {k: v for p in parts for k, v in p[3].items()},
        )
    else:
        merged = local
    merged = merged.sorted()
    expected = np.arange(num_videos) if isinstance(num_videos, int) else np.asarray(num_videos, dtype=np.int64)
    size = int(expected.max()) + 1 if len(expected) else 0
    seen = np.concatenate([merged.indices, np.fromiter(merged.skipped, np.int64, len(merged.skipped))])
    counts = np.bincount(seen, minlength=size) if len(seen) else np.zeros(size, np.int64)
    wanted = np.zeros(len(counts), np.int64)
    wanted[expected] = 1
    if (counts != wanted).any():
        twice = np.flatnonzero(counts > 1)[:10].tolist()
        never = np.flatnonzero(counts < wanted)[:10].tolist()
        unexpected = np.flatnonzero((counts == 1) & (wanted == 0))[:10].tolist()
        raise RuntimeError(
            f"evaluation did not count every video exactly once: counted more than once {twice}, "
            f"never counted {never}, not to be counted {unexpected} (of {len(expected)})"
        )
    return merged


def ensemble_predictions(
    runs: Sequence[Predictions], coeffs: Sequence[float] | None, apply_softmax: bool, sources: Sequence[str]
) -> Predictions:
    """Fuse several models' gathered predictions video by video.

    The runs must agree on the videos and their labels (same list, same
    order); videos any run skipped are left out of all.

    Raises:
        ValueError: the runs disagree on the labels (different lists or orders).
    """
    skipped = {k: v for run in runs for k, v in run.skipped.items()}
    keep = np.array(sorted(set(runs[0].indices.tolist()) - set(skipped)), dtype=np.int64)
    kept = [run.select(keep) for run in runs]
    for run, source in zip(kept[1:], sources[1:]):
        if not (np.array_equal(run.indices, kept[0].indices) and np.array_equal(run.labels, kept[0].labels)):
            raise ValueError(
                f"the ensemble's runs disagree on the videos or their labels: {sources[0]} and {source} "
                f"were evaluated on different lists or in a different order"
            )
    scores = [softmax(run.scores) if apply_softmax else run.scores for run in kept]
    return Predictions(kept[0].indices, fuse_ensemble(scores, coeffs), kept[0].labels, skipped)


# --------------------------------------------------------------------------- the multi-view loop


class IndexedClips(Dataset):
    """``(index, clip or None, label, error or None)`` for the given list positions.

    A :class:`SampleLoadError` is returned rather than raised, so the main
    process decides (stop, or leave the video out with ``--skip-bad``) and the
    message keeps the file's name across worker processes.
    """

    def __init__(self, dataset: TSNDataSet, indices: list[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        try:
            x, label = self.dataset[index]
        except SampleLoadError as err:
            return index, None, self.dataset.records[index].label, (err.path, err.reason)
        return index, x, label, None


def collate_clips(items):
    """Stack the good clips; returns ``(indices, x [B, ...] or None, labels, {index: (path, reason)})``."""
    good = [item for item in items if item[1] is not None]
    bad = {item[0]: item[3] for item in items if item[1] is None}
    x = torch.stack([item[1] for item in good]) if good else None
    indices = np.array([item[0] for item in good], dtype=np.int64)
    labels = np.array([item[2] for item in good], dtype=np.int64)
    return indices, x, labels, bad


def build_dataset(model, cfg: DatasetConfig, test_segments: int, *, test_crops: int = 1, full_res: bool = False,
                  input_size: int | None = None, scale_size: int | None = None, dense_sample: bool = False,
                  twice_sample: bool = False, num_clips: int = 1, lmdb: str | None = None) -> TSNDataSet:
    """The test-mode dataset for one model (a :class:`ops.models.PAN`): its frames per segment,
    normalisation and views (the keywords are ``test_models.py``'s flags of the same names)."""
    crop = input_size or model.crop_size
    transform = eval_transform(crop, scale_size, test_crops, full_res, model.input_mean, model.input_std)
    return TSNDataSet(
        cfg.root_path, cfg.val_list, num_segments=test_segments, new_length=model.new_length,
        image_tmpl=cfg.image_tmpl, transform=transform, mode="test", dense_sample=dense_sample,
        twice_sample=twice_sample, num_clips=num_clips, video=cfg.video, num_class=cfg.num_class,
        lmdb_path=lmdb,
    )


@dataclass
class EvalSetup:
    """What :func:`evaluate` needs besides the model and the data."""

    device: torch.device
    options: InferenceOptions
    num_views: int
    crop_fusion_type: str = "avg"
    skip_bad: bool = False
    show_progress: bool = False


def evaluate(model: torch.nn.Module, loader: DataLoader, num_class: int, setup: EvalSetup,
             description: str = "eval") -> Predictions:
    """Score every video the loader yields; views are fused per video.

    Each batch ``x`` is ``[B, V*T*m*3, H, W]`` (``V = setup.num_views``); it is
    run as ``[B*V, T*m*3, H, W]`` and the ``[B*V, C]`` scores are fused into
    ``[B, C]``. A video that failed to load stops the evaluation
    (:class:`SampleLoadError` naming its file) unless ``setup.skip_bad``.
    """
    parts, skipped = [], {}
    done = 0
    start = time.perf_counter()
    bar = tqdm(total=len(loader.dataset), unit="video", desc=description, disable=not setup.show_progress,
               dynamic_ncols=True)
    for indices, x, labels, bad in loader:
        for index, (path, reason) in bad.items():
            if not setup.skip_bad:
                raise SampleLoadError(path, f"{reason} -- evaluation stops here (pass --skip-bad to leave "
                                            f"unreadable videos out and report them)")
            logger.warning("left out video %d: %s: %s", index, path, reason)
            skipped[int(index)] = f"{path}: {reason}"
        if x is not None:
            batch = x.shape[0]
            clips = x.reshape(batch * setup.num_views, -1, *x.shape[-2:])
            scores = run_batch(model, clips, setup.device, setup.options)
            fused = fuse_views(scores.reshape(batch, setup.num_views, -1), setup.crop_fusion_type)
            parts.append((indices, fused.numpy(), labels))
        done += len(indices) + len(bad)
        bar.update(len(indices) + len(bad))
    bar.close()
    elapsed = time.perf_counter() - start
    logger.info("%s: %d videos in %.1f s (%.2f videos/s)", description, done, elapsed, done / max(elapsed, 1e-9))
    if not parts:
        result = Predictions.empty(num_class)
        result.skipped = skipped
        return result
    return Predictions(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]).astype(np.float32),
        np.concatenate([p[2] for p in parts]),
        skipped,
    )


# --------------------------------------------------------------------------- outputs



class OutputError(PanError, OSError):
    """An output path that cannot be used; the message names the flag and the path."""


def check_output_file(path: str, flag: str) -> None:
    """Fail now, naming ``flag``, if a file could not be written at ``path`` later.

    The nearest existing folder on the way to ``path`` must be writable (the
    missing ones are created when the file is written); nothing is created here.
    """
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise OutputError(f"{flag} {path} is a folder, not a file")
    folder = os.path.dirname(target)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path} cannot be written: {folder} is not a writable folder")


class OutputFolder:
    """An evaluation's output folder, written as one unit.

    Files are written into a hidden staging folder beside ``path``
    (:meth:`file`); :meth:`commit` renames it to ``path`` once every file is
    there, :meth:`discard` removes it. So a folder holds the outputs of one
    complete evaluation or nothing new: a failed run leaves an earlier result
    untouched, never half replaced. A folder that already holds files is
    refused up front unless ``overwrite``; it is then replaced only at commit.

    Raises:
        OutputError: ``path`` holds files (without ``overwrite``), is a file, or
            its parent folder cannot be created or written.
    """

    def __init__(self, path: str, overwrite: bool = False, flag: str = "--output_dir") -> None:
        self.path = os.path.abspath(path)
        self.overwrite = overwrite
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise OutputError(f"{flag} {path} is a file, not a folder")
        if os.path.isdir(self.path) and os.listdir(self.path) and not overwrite:
            raise OutputError(
                f"{flag} {path} already holds the outputs of another evaluation ({len(os.listdir(self.path))} "
                f"entries); choose another folder, or pass --overwrite to replace them once this evaluation "
                f"has finished")
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
            self.staging = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.partial-", dir=parent)
        except OSError as err:
            raise OutputError(f"{flag}: output folder {path} is not writable: {err}") from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.staging, 0o777 & ~umask)  # mkdtemp makes it 0700; teammates should read results

    def file(self, name: str) -> str:
        """Where to write output ``name`` now (inside the staging folder)."""
        return os.path.join(self.staging, name)

    def commit(self) -> str:
        """Publish the staged files under ``path``; returns ``path``.

        Raises:
            OutputError: without ``overwrite``, files appeared in ``path`` since the start (the
                staged outputs are kept, and named).
        """
        if os.path.isdir(self.path) and os.listdir(self.path):
            if not self.overwrite:
                raise OutputError(f"{self.path} received files while this evaluation ran; its outputs are "
                                  f"kept in {self.staging}")
            previous = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.replaced-",
                                        dir=os.path.dirname(self.path))
            os.rmdir(previous)
            os.rename(self.path, previous)
            os.rename(self.staging, self.path)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(self.staging, self.path)  # onto nothing, or onto an empty folder
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def save_results(
    output_dir: str,
    predictions: Predictions,
    video_paths: Sequence[str],
    metrics: Metrics,
    confusion: np.ndarray,
    extra: dict | None = None,
) -> dict[str, str]:
    """Write ``scores.npz`` (indices, scores, labels, video paths), ``confusion_matrix.csv``
    and ``metrics.json`` atomically; returns their paths by kind."""
    paths = {
        "scores": os.path.join(output_dir, "scores.npz"),
        "confusion": os.path.join(output_dir, "confusion_matrix.csv"),
        "metrics": os.path.join(output_dir, "metrics.json"),
    }

    def write_npz(f) -> None:
        np.savez(
            f,
            indices=predictions.indices,
            scores=predictions.scores,
            labels=predictions.labels,
            videos=np.array([video_paths[i] for i in predictions.indices], dtype=str),
        )

    atomic_write(paths["scores"], write_npz)
    text = io.StringIO()
    np.savetxt(text, confusion, fmt="%d", delimiter=",")
    write_text_atomic(paths["confusion"], text.getvalue())
    summary = {**metrics.as_dict(), "skipped": {video_paths[k]: v for k, v in sorted(predictions.skipped.items())}}
    summary.update(extra or {})
    write_text_atomic(paths["metrics"], json.dumps(summary, indent=2) + "\n")
    return paths


def submission_rows(
    predictions: Predictions, video_ids: Sequence[str], categories: Sequence[str], top_k: int
) -> list[list[str]]:
    """``[video_id, category_1, ..., category_k]`` per video, best first (the challenge format)."""
    if len(categories) < predictions.scores.shape[1]:
        raise ValueError(f"{len(categories)} category names for {predictions.scores.shape[1]} classes")
    order = np.argsort(-predictions.scores, axis=1, kind="stable")[:, :top_k]
    return [[video_ids[i], *(categories[c] for c in row)] for i, row in zip(predictions.indices, order)]


def write_submission(path: str, rows: Sequence[Sequence[str]]) -> None:
    """A ``;``-separated submission file (one video per line), written atomically."""
    text = io.StringIO()
    csv.writer(text, delimiter=";", lineterminator="\n").writerows(rows)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    write_text_atomic(path, text.getvalue())
