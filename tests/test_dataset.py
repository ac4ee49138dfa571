"""TSNDataSet: list parsing, which frames are read, per-item randomness, videos, LMDB, errors."""

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ops.dataset import (
    ListFileError,
    SampleLoadError,
    TSNDataSet,
    check_records,
    frame_numbers,
    parse_list_file,
)
from ops.transforms import eval_transform, train_transform
from tests.helpers_data import frame_number, make_frames, make_video, write_list


def read_numbers(x: torch.Tensor) -> list[int]:
    """Frame numbers of an untransformed item ``[N*3, H, W]`` in [0, 1]."""
    frames = (x.view(-1, 3, *x.shape[-2:]).permute(0, 2, 3, 1) * 255).numpy()
    return [frame_number(f) for f in frames]


@pytest.fixture
def data(tmp_path):
    make_frames(tmp_path / "frames" / "walk the dog", 20)
    make_frames(tmp_path / "frames" / "b", 6)
    write_list(tmp_path / "train.txt", [("frames/walk the dog", 20, 1), ("frames/b", 6, 0)])
    return tmp_path


class TestListFile:
    def test_paths_with_spaces_and_line_numbers(self, data):
        recs = parse_list_file(str(data / "train.txt"), num_class=2)
        assert [(r.path, r.num_frames, r.label, r.line) for r in recs] == [
            ("frames/walk the dog", 20, 1, 1), ("frames/b", 6, 0, 2)]

    def test_every_bad_line_is_reported(self, tmp_path):
        p = tmp_path / "l.txt"
        p.write_text("a 10 1\nbroken\n\nb x 1\nc 0 1\nd 5 7\ne 5 -1\nf 4 y\n")
        with pytest.raises(ListFileError) as e:
            parse_list_file(str(p), num_class=3)
        lines = [q.split(": ")[0] for q in e.value.problems]
        assert lines == [f"{p}:{n}" for n in (2, 4, 5, 6, 7, 8)]
        msg = str(e.value)
        assert "frame count 0" in msg and "label 7 is outside [0, 3)" in msg

    def test_empty_list(self, tmp_path):
        (tmp_path / "e.txt").write_text("\n")
        with pytest.raises(ListFileError, match="no entries"):
            parse_list_file(str(tmp_path / "e.txt"))


def test_consecutive_frames_stay_on_the_last_frame():
    np.testing.assert_array_equal(frame_numbers(np.array([0, 8]), 10, 4), [1, 2, 3, 4, 9, 10, 10, 10])


class TestFramesRead:
    def test_val_reads_centres_with_m_consecutive_frames(self, data):
        ds = TSNDataSet(str(data), str(data / "train.txt"), num_segments=2, new_length=4, mode="val")
        x, label = ds[0]
        # 20 frames, m=4: 17 starts, tick 8.5 -> offsets 4, 12 -> frames 5..8, 13..16.
        assert x.shape == (2 * 4 * 3, 30, 40) and label == 1
        assert read_numbers(x) == [5, 6, 7, 8, 13, 14, 15, 16]

    def test_short_video_clamps_at_its_last_frame(self, data):
        make_frames(data / "frames" / "c", 3)
        write_list(data / "s.txt", [("frames/c", 3, 0)])
        for mode in ("train", "val", "test"):
            ds = TSNDataSet(str(data), str(data / "s.txt"), num_segments=2, new_length=4, mode=mode)
            assert read_numbers(ds[0][0]) == [1, 2, 3, 3, 1, 2, 3, 3]

    def test_train_reads_consecutive_frames_inside_the_video(self, data):
        ds = TSNDataSet(str(data), str(data / "train.txt"), num_segments=2, new_length=4, mode="train")
        for epoch in range(10):
            ds.set_epoch(epoch)
            nums = read_numbers(ds[1][0])
            assert nums[:4] == list(range(nums[0], nums[0] + 4)) and max(nums) <= 6

    def test_test_views(self, data):
        t = eval_transform(16, 20, num_crops=3, full_res=False)
        ds = TSNDataSet(str(data), str(data / "train.txt"), num_segments=2, new_length=1, mode="test",
                        twice_sample=True, transform=t)
        x, _ = ds[0]
        assert x.shape == (3 * 2 * 2 * 3, 16, 16)
        ds = TSNDataSet(str(data), str(data / "train.txt"), num_segments=2, mode="test", dense_sample=True)
        assert ds[0][0].shape[0] == 10 * 2 * 3


class TestRandomness:
    def make(self, data, **kw):
        return TSNDataSet(str(data), str(data / "train.txt"), num_segments=3, new_length=1,
                          transform=train_transform(16, None, flip=True), seed=5, **kw)

    def test_item_is_a_function_of_seed_epoch_index(self, data):
        a, b = self.make(data), self.make(data)
        random.seed(0), np.random.seed(0), torch.manual_seed(0)
        a.set_epoch(3)
        xa = a[0][0]
        random.seed(9), np.random.seed(9), torch.manual_seed(9)
        _ = b[1]  # access order does not matter
        b.set_epoch(3)
        assert torch.equal(xa, b[0][0])

    def test_epochs_differ(self, data):
        ds = self.make(data)
        outs = []
        for e in range(6):
            ds.set_epoch(e)
            outs.append(ds[0][0])
        assert len({o.sum().item() for o in outs}) > 1

    def test_workers_give_the_same_items(self, data):
        ds = self.make(data)
        ds.set_epoch(2)
        direct = [ds[i][0] for i in range(len(ds))]
        loaded = [x[0] for x, _ in DataLoader(ds, batch_size=1, num_workers=2)]
        assert all(torch.equal(a, b) for a, b in zip(direct, loaded))


class TestVideo:
    @pytest.mark.parametrize("codec, ext", [("mpeg4", "mp4"), ("libvpx-vp9", "webm")])
    def test_reads_the_same_frames_as_folders(self, tmp_path, codec, ext):
        make_video(tmp_path / "videos" / f"a b.{ext}", 60, codec=codec)
        write_list(tmp_path / "v.txt", [(f"videos/a b.{ext}", 60, 0)])
        ds = TSNDataSet(str(tmp_path), str(tmp_path / "v.txt"), num_segments=4, new_length=2, mode="val", video=True)
        x, _ = ds[0]
        assert x.shape == (4 * 2 * 3, 48, 64)
        # 60 frames, m=2: 59 starts, tick 14.75 -> offsets 7, 22, 36, 51.
        assert read_numbers(x) == [8, 9, 23, 24, 37, 38, 52, 53]

    def test_video_with_fewer_frames_than_listed(self, tmp_path):
        make_video(tmp_path / "v.mp4", 10)
        write_list(tmp_path / "v.txt", [("v.mp4", 40, 0)])
        ds = TSNDataSet(str(tmp_path), str(tmp_path / "v.txt"), num_segments=2, mode="val", video=True)
        with pytest.raises(SampleLoadError) as e:
            ds[0]
        assert e.value.path.endswith("v.mp4") and "10 decodable frames" in str(e.value)
        assert "v.txt:1" in str(e.value)

    def test_undecodable_and_missing_video(self, tmp_path):
        (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 50)
        write_list(tmp_path / "v.txt", [("bad.mp4", 10, 0), ("gone.mp4", 10, 0)])
        ds = TSNDataSet(str(tmp_path), str(tmp_path / "v.txt"), num_segments=2, mode="val", video=True)
        with pytest.raises(SampleLoadError, match="bad.mp4: cannot open video"):
            ds[0]
        with pytest.raises(SampleLoadError, match="gone.mp4: video file does not exist"):
            ds[1]


class TestLoadErrors:
    def load(self, root, rows, **kw):
        write_list(root / "l.txt", rows)
        return TSNDataSet(str(root), str(root / "l.txt"), num_segments=2, mode="val", **kw)

    def test_missing_folder(self, data):
        with pytest.raises(SampleLoadError) as e:
            self.load(data, [("frames/nope", 5, 0)])[0]
        assert e.value.path == str(data / "frames" / "nope") and "l.txt:1" in str(e.value)

    def test_missing_frame_is_never_substituted(self, data):
        (data / "frames" / "walk the dog" / "img_00006.jpg").unlink()
        with pytest.raises(SampleLoadError, match="img_00006.jpg: missing frame"):
            self.load(data, [("frames/walk the dog", 20, 0)])[0]

    def test_empty_frame(self, data):
        (data / "frames" / "b" / "img_00002.jpg").write_bytes(b"")
        with pytest.raises(SampleLoadError, match="img_00002.jpg: empty image file"):
            self.load(data, [("frames/b", 6, 0)])[0]

    @pytest.mark.parametrize("transform", [None, train_transform(16, None, True), eval_transform(16, 20)])
    def test_corrupt_frame(self, data, transform):
        p = data / "frames" / "b" / "img_00002.jpg"
        good = p.read_bytes()
        p.write_bytes(good[:200])
        with pytest.raises(SampleLoadError) as e:
            self.load(data, [("frames/b", 6, 0)], transform=transform)[0]
        assert e.value.path == str(p)
        p.write_bytes(good)
        (data / "frames" / "b" / "img_00005.jpg").write_bytes(b"garbage, not a jpeg")
        with pytest.raises(SampleLoadError, match="img_00005.jpg: not a readable image"):
            self.load(data, [("frames/b", 6, 0)], transform=transform)[0]

    def test_label_outside_num_class(self, data):
        with pytest.raises(ListFileError, match="label 1 is outside"):
            TSNDataSet(str(data), str(data / "train.txt"), num_class=1)


def test_check_records_reports_everything(data):
    (data / "frames" / "b" / "img_00006.jpg").unlink()
    (data / "frames" / "walk the dog" / "img_00003.jpg").write_bytes(b"")
    write_list(data / "l.txt", [("frames/walk the dog", 20, 0), ("frames/b", 6, 0), ("frames/x", 3, 0)])
    recs = parse_list_file(str(data / "l.txt"))
    quick = check_records(recs, str(data), "img_{:05d}.jpg", False, workers=2)
    assert len(quick) == 2
    assert any("l.txt:2" in q and "img_00006.jpg: missing frame" in q for q in quick)
    assert any("l.txt:3" in q and "frame folder does not exist" in q for q in quick)
    full = check_records(recs, str(data), "img_{:05d}.jpg", False, workers=2, check_frames=True)
    assert len(full) == 3 and any("img_00003.jpg: empty image file" in q for q in full)


def test_check_records_videos(tmp_path):
    make_video(tmp_path / "ok.mp4", 8)
    (tmp_path / "bad.mp4").write_bytes(b"junk" * 10)
    write_list(tmp_path / "v.txt", [("ok.mp4", 8, 0), ("ok.mp4", 9, 0), ("bad.mp4", 3, 0)])
    recs = parse_list_file(str(tmp_path / "v.txt"))
    probs = check_records(recs, str(tmp_path), video=True, workers=2, check_frames=True)
    assert len(probs) == 2
    assert "v.txt:2" in probs[0] and "8 frames, list says 9" in probs[0]
    assert "v.txt:3" in probs[1]


def test_lmdb_store_gives_the_same_items(data):
    from tools import build_lmdb  # lmdb is in requirements.txt: never skipped

    out = data / "frames.lmdb"
    args = build_lmdb.get_args_parser().parse_args(
        ["--root_path", str(data), "--list_file", "train.txt", "--output", str(out), "--workers", "2"])
    meta = build_lmdb.main(args)
    assert meta["num_frames"] == 26 and meta["num_videos"] == 2
    kw = dict(num_segments=3, new_length=2, transform=train_transform(16, None, True), seed=1)
    a = TSNDataSet(str(data), str(data / "train.txt"), **kw)
    b = TSNDataSet(str(data), str(data / "train.txt"), lmdb_path=str(out), **kw)
    for i in range(2):
        assert torch.equal(a[i][0], b[i][0])
    assert torch.equal(torch.cat([x for x, _ in DataLoader(b, batch_size=2, num_workers=2)]),
                       torch.cat([x for x, _ in DataLoader(b, batch_size=2, num_workers=0)]))
    write_list(data / "more.txt", [("frames/b", 7, 0)])
    c = TSNDataSet(str(data), str(data / "more.txt"), num_segments=7, mode="test", lmdb_path=str(out))
    with pytest.raises(SampleLoadError, match="frames/b/img_00007.jpg: missing frame"):
        c[0]
    assert check_records(c.records, str(data), lmdb_path=str(out), workers=2)


def test_lmdb_missing_package_message(monkeypatch):
    import builtins

    from ops import lmdb_store

    real = builtins.__import__

    def no_lmdb(name, *a, **k):
        if name == "lmdb":
            raise ImportError("no module")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_lmdb)
    with pytest.raises(ImportError, match="pip install lmdb"):
        lmdb_store.import_lmdb()


def test_bad_options(data):
    with pytest.raises(ValueError, match="mode"):
        TSNDataSet(str(data), str(data / "train.txt"), mode="eval")
    with pytest.raises(ValueError, match="test"):
        TSNDataSet(str(data), str(data / "train.txt"), mode="train", twice_sample=True)
