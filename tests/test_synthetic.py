"""Tests of tools/make_synthetic.py: layout, determinism, atomicity and mirror symmetry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools import make_synthetic as ms

TINY = dict(size=32, num_frames=8, train_per_class=2, val_per_class=1, progress=False)


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, keyed by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny dataset with mp4 videos, generated once for the layout tests."""
    return ms.generate(tmp_path_factory.mktemp("syn") / "synthetic", seed=0, videos=True, workers=1, **TINY)


# --------------------------------------------------------------------------- structure


def test_mirror_structure():
    assert len(ms.CLASS_NAMES) == ms.NUM_CLASSES == 12
    assert len(set(ms.CLASS_NAMES)) == 12
    flat = [c for pair in ms.MIRROR_PAIRS for c in pair]
    assert sorted(flat) == list(range(12)), "every class is in exactly one pair"
    for a, b in ms.MIRROR_PAIRS:
        assert ms.mirror_of(a) == b and ms.mirror_of(b) == a
    with pytest.raises(ValueError):
        ms.mirror_of(12)


def test_render_shape_dtype():
    video = ms.render_video(3, ms.video_rng(0, "train", 0), size=24, num_frames=10)
    assert video.shape == (10, 24, 24, 3) and video.dtype == np.uint8
    assert video.std() > 5, "not a blank video"
    with pytest.raises(ValueError):
        ms.render_video(12, ms.video_rng(0, "train", 0))


@pytest.mark.parametrize("pair", ms.MIRROR_PAIRS)
def test_mirror_class_is_exact_time_reversal(pair):
    """Same random state: the mirror class renders the base video played backwards."""
    a, b = pair
    for index in range(3):
        va = ms.render_video(a, ms.video_rng(5, "val", index), 32, 12)
        vb = ms.render_video(b, ms.video_rng(5, "val", index), 32, 12)
        np.testing.assert_array_equal(vb, va[::-1])


@pytest.mark.parametrize("label", range(12))
def test_every_class_has_motion(label):
    """Consecutive frames differ well beyond sensor noise somewhere in the clip."""
    video = ms.render_video(label, ms.video_rng(0, "train", label), 64, 32).astype(np.float32)
    diff = np.abs(np.diff(video, axis=0)).max(axis=-1)  # [T-1, H, W]
    moving = (diff > 30).sum(axis=(1, 2))  # pixels that clearly changed, per step
    assert moving.max() >= 30, f"class {label} barely moves"


# --------------------------------------------------------------------------- statistics


def _per_video_stats(label: int, seed: int, n: int, size: int = 32, frames: int = 12) -> dict[str, np.ndarray]:
    """Per-video statistics of ``n`` videos of ``label`` (independent dataset seeds).

    Returns arrays with the video as first axis:
      ``mean_t`` [n, T]   mean intensity per frame position, minus the video's time average
      ``std_t``  [n, T]   spatial standard deviation per frame position
      ``channels`` [n, 3] mean over all frames of the per-channel means
      ``level`` [n]       time-averaged mean intensity
      ``contrast`` [n]    time-averaged spatial standard deviation
    """
    v = np.stack([ms.render_video(label, ms.video_rng(seed, "train", i), size, frames)
                  for i in range(n)]).astype(np.float32) / 255
    mean_t = v.mean(axis=(2, 3, 4))
    std_t = v.std(axis=(2, 3)).mean(axis=-1)
    return {"mean_t": mean_t - mean_t.mean(axis=1, keepdims=True), "std_t": std_t,
            "channels": v.mean(axis=(1, 2, 3)), "level": mean_t.mean(axis=1), "contrast": std_t.mean(axis=1)}


def _z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-sample z statistic of the difference of means along axis 0."""
    se = np.sqrt(x.var(axis=0, ddof=1) / len(x) + y.var(axis=0, ddof=1) / len(y)) + 1e-9
    return (x.mean(axis=0) - y.mean(axis=0)) / se


N_STATS = 48
Z_MAX = 4.5  # all seeds are fixed, so this is deterministic; 4.5 sigma leaves room for many comparisons


@pytest.fixture(scope="module")
def pair_stats() -> dict[int, dict[str, np.ndarray]]:
    # Disjoint seeds per class: the two classes of a pair are independent samples.
    return {c: _per_video_stats(c, seed=100 + c, n=N_STATS) for c in range(12)}


@pytest.mark.parametrize("pair", ms.MIRROR_PAIRS)
def test_single_frame_statistics_match_within_pair(pair, pair_stats):
    """Time-averaged pixel statistics of the two classes are the same distribution,
    and the statistics at frame t of one class match frame T-1-t of the other."""
    a, b = (pair_stats[c] for c in pair)
    for key in ("channels", "level", "contrast"):
        assert np.abs(_z(a[key], b[key])).max() < Z_MAX, key
    for key in ("mean_t", "std_t"):
        assert np.abs(_z(a[key], b[key][:, ::-1])).max() < Z_MAX, key


@pytest.mark.parametrize("pair", [(4, 5), (8, 9)])
def test_frame_statistics_check_has_power(pair, pair_stats):
    """Growing and fading change the frame statistics over time, so the check above would
    catch a mirror class that was not time reversed: frame t of A differs from frame t of B,
    and from frame T-1-t of an independent sample of A itself."""
    a, b = (pair_stats[c] for c in pair)
    assert np.abs(_z(a["std_t"], b["std_t"])).max() > 2 * Z_MAX
    a2 = _per_video_stats(pair[0], seed=999, n=N_STATS)
    assert np.abs(_z(a["std_t"], a2["std_t"][:, ::-1])).max() > 2 * Z_MAX


def test_motion_direction_in_distribution():
    """The mirror classes move the opposite way: centroid of the foreground drifts
    left for class 0 and right for class 1, over independent samples."""
    def drift(label: int) -> np.ndarray:
        out = []
        for i in range(16):
            v = ms.render_video(label, ms.video_rng(7 + label, "val", i), 32, 12).astype(np.float32)
            energy = np.abs(np.diff(v, axis=0)).sum(-1)  # [T-1, H, W], motion only
            x = np.arange(v.shape[2]) + 0.5
            cx = (energy.sum(1) * x).sum(-1) / (energy.sum((1, 2)) + 1e-6)  # [T-1]
            out.append(np.polyfit(np.arange(len(cx)), cx, 1)[0])
        return np.array(out)

    assert np.median(drift(0)) < -0.5 and np.median(drift(1)) > 0.5


# --------------------------------------------------------------------------- dataset files


def test_layout_and_list_format(tiny):
    lines = (tiny / "category.txt").read_text().splitlines()
    assert lines == ms.CLASS_NAMES
    manifest = json.loads((tiny / ms.MANIFEST).read_text())
    assert manifest["seed"] == 0 and manifest["size"] == 32 and manifest["num_frames"] == 8
    assert manifest["class_names"] == ms.CLASS_NAMES
    assert manifest["mirror_pairs"] == [list(p) for p in ms.MIRROR_PAIRS]
    assert manifest["generator_version"] == ms.GENERATOR_VERSION
    vids = {}
    for split, per_class in (("train", 2), ("val", 1)):
        rows = [line.split() for line in (tiny / f"{split}_list.txt").read_text().splitlines()]
        assert len(rows) == 12 * per_class == manifest["num_videos"][split]
        labels = [int(r[2]) for r in rows]
        assert sorted(labels) == sorted(list(range(12)) * per_class)
        for path, n, label in rows:
            assert path.startswith("frames/video_") and len(Path(path).name) == len("video_000000")
            assert int(n) == 8
            files = sorted(p.name for p in (tiny / path).iterdir())
            assert files == [f"img_{t:05d}.jpg" for t in range(1, 9)]
            with Image.open(tiny / path / "img_00001.jpg") as im:
                assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
            vids[Path(path).name] = (split, int(label))
        video_rows = [line.split() for line in (tiny / f"{split}_videolist.txt").read_text().splitlines()]
        assert [(Path(p).stem, n, l) for p, n, l in video_rows] == [(Path(p).name, n, l) for p, n, l in rows]
        assert all(p.startswith("videos/") and p.endswith(".mp4") for p, _, _ in video_rows)
    assert len(vids) == 36, "video ids are unique across splits"
    assert ms.is_complete(tiny) and ms.is_complete(tiny, seed=0, size=32)
    assert not ms.is_complete(tiny, seed=1)


def test_mp4_decodes_to_frame_count(tiny):
    av = pytest.importorskip("av")
    rows = [line.split() for line in (tiny / "val_videolist.txt").read_text().splitlines()]
    for path, n, label in rows[:4]:
        with av.open(str(tiny / path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == int(n)
        assert frames[0].shape == (32, 32, 3)
        # Lossy, but close to the JPEG frames of the same video.
        with Image.open(tiny / "frames" / Path(path).stem / "img_00001.jpg") as im:
            jpeg = np.asarray(im, dtype=np.float32)
        assert np.abs(frames[0].astype(np.float32) - jpeg).mean() < 12


def test_determinism_across_workers_and_seeds(tmp_path, tiny):
    one = ms.generate(tmp_path / "a", seed=0, videos=False, workers=1, **TINY)
    two = ms.generate(tmp_path / "b", seed=0, videos=False, workers=2, **TINY)
    other = ms.generate(tmp_path / "c", seed=1, videos=False, workers=1, **TINY)
    da, db, dc = _digest(one), _digest(two), _digest(other)
    assert da == db, "same seed, different worker counts: byte-identical"
    # The tiny fixture (with videos) has the same frames and frame lists.
    dt = _digest(tiny)
    assert {k: v for k, v in dt.items() if not k.startswith("videos/") and "videolist" not in k
            and k != ms.MANIFEST} == {k: v for k, v in da.items() if k != ms.MANIFEST}
    frames_a = {k: v for k, v in da.items() if k.startswith("frames/")}
    frames_c = {k: v for k, v in dc.items() if k.startswith("frames/")}
    assert frames_a.keys() == frames_c.keys()
    assert sum(frames_a[k] != frames_c[k] for k in frames_a) == len(frames_a), "a new seed changes every frame"


def test_partial_folder_is_not_a_dataset(tmp_path, monkeypatch):
    out = tmp_path / "synthetic"

    def boom(job):
        if job.index == 5:
            raise KeyboardInterrupt  # the user pressing Ctrl-C halfway
        return real(job)

    real = ms._write_video
    monkeypatch.setattr(ms, "_write_video", boom)
    with pytest.raises(KeyboardInterrupt):
        ms.generate(out, seed=0, workers=1, **TINY)
    assert not out.exists() and list(tmp_path.iterdir()) == [], "nothing left behind"

    # A hard kill leaves a temp sibling behind: it is never a finished dataset ...
    stale = tmp_path / f".synthetic{ms._PARTIAL_TAG}999999999-x"
    (stale / "frames").mkdir(parents=True)
    (stale / "train_list.txt").write_text("frames/video_000000 8 0\n")
    assert not ms.is_complete(stale)
    assert not ms.is_complete(out)
    # ... and the next run (pid 999999999 is not alive) cleans it up and finishes.
    monkeypatch.setattr(ms, "_write_video", real)
    ms.generate(out, seed=0, workers=1, **TINY)
    assert ms.is_complete(out, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]


def test_no_manifest_means_unfinished(tiny, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    assert ms.is_complete(copy)
    (copy / ms.MANIFEST).unlink()
    assert not ms.is_complete(copy)


def test_existing_dataset_reuse_refuse_force(tmp_path):
    out = ms.generate(tmp_path / "syn", seed=0, workers=1, **TINY)
    stamp = (out / ms.MANIFEST).stat().st_mtime_ns
    assert ms.generate(out, seed=0, workers=1, **TINY) == out  # same settings: reused
    assert (out / ms.MANIFEST).stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError):
        ms.generate(out, seed=3, workers=1, **TINY)  # different dataset: refused
    assert ms.is_complete(out, seed=0)
    ms.generate(out, seed=3, workers=1, force=True, **TINY)
    assert ms.is_complete(out, seed=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"], "old copy removed"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        ms.generate(foreign, seed=0, workers=1, **TINY)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_command_line(tmp_path, capsys):
    args = ms.get_args_parser().parse_args(
        ["--out", str(tmp_path / "cli"), "--size", "16", "--frames", "4", "--train-per-class", "1",
         "--val-per-class", "1", "--workers", "1", "--seed", "2", "--quiet"])
    assert ms.main(args) == 0
    assert ms.is_complete(tmp_path / "cli", seed=2, size=16, num_frames=4)
    args.seed = 4
    assert ms.main(args) == 2, "refuses to overwrite a different dataset"
    defaults = ms.get_args_parser().parse_args([])
    assert Path(defaults.out) == ms.DEFAULT_OUT and defaults.size == 64 and defaults.seed == 0
