"""ops.frame_sources: one interface (count, read 1-based frames, name a frame, check) over frame
folders, video files and LMDB stores, and opening a source from a path alone.

The three readers used to be separate branches of the dataset, the data check and the demo;
these tests pin what each kind gives through the one interface, and the dataset's messages
that depend on the kind.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from ops.dataset import TSNDataSet
from ops.frame_sources import (
    FolderSource,
    FrameSourceError,
    LmdbSource,
    SampleLoadError,
    SourceMissingError,
    VideoFileSource,
    listed_source,
    open_source,
    rgb_arrays,
)
from ops.lmdb_store import FrameStore
from tests.helpers_data import frame_number, make_frames, make_video, write_list
from tools import build_lmdb


@pytest.fixture
def data(tmp_path) -> Path:
    """``frames/a`` (7 frames), ``frames/b c`` (3), ``v.mp4`` (9), and an LMDB store of both folders."""
    make_frames(tmp_path / "frames" / "a", 7)
    make_frames(tmp_path / "frames" / "b c", 3)
    make_video(tmp_path / "v.mp4", 9)
    write_list(tmp_path / "list.txt", [("frames/a", 7, 0), ("frames/b c", 3, 1)])
    build_lmdb.main(build_lmdb.get_args_parser().parse_args(
        ["--root_path", str(tmp_path), "--list_file", "list.txt", "--output", str(tmp_path / "s.lmdb"),
         "--workers", "1"]))
    return tmp_path


def numbers_of(frames) -> list[int]:
    return [frame_number(np.asarray(f.convert("RGB")) if hasattr(f, "convert") else f) for f in frames]


def sources(data: Path) -> dict[str, object]:
    return {
        "folder": FolderSource(str(data / "frames" / "a")),
        "lmdb": LmdbSource(FrameStore(str(data / "s.lmdb")), "frames/a"),
        "video": VideoFileSource(str(data / "v.mp4")),
    }


@pytest.mark.parametrize("kind", ["folder", "lmdb", "video"])
def test_every_kind_counts_reads_1_based_frames_and_names_them(data, kind):
    source = sources(data)[kind]
    assert source.count() == (9 if kind == "video" else 7)
    frames = source.read([3, 1, 3, 7])
    assert numbers_of(frames) == [3, 1, 3, 7]
    assert frames[0] is frames[2]  # a repeated number is one frame
    arrays = source.read_rgb([2, 2])
    assert arrays[0].dtype == np.uint8 and arrays[0].shape == ((48, 64, 3) if kind == "video" else (30, 40, 3))
    assert numbers_of(arrays) == [2, 2]
    name = source.frame_name(4)
    assert {"folder": name.endswith("frames/a/img_00004.jpg"), "lmdb": name.endswith("s.lmdb:frames/a/img_00004.jpg"),
            "video": name.endswith("v.mp4#frame4")}[kind]


def test_folder_and_store_give_the_same_pixels(data):
    s = sources(data)
    a = s["folder"].read_rgb(range(1, 8))
    b = s["lmdb"].read_rgb(range(1, 8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_missing_sources_and_frames_name_the_file(data):
    with pytest.raises(SourceMissingError, match="frames/x: frame folder does not exist"):
        FolderSource(str(data / "frames" / "x")).read([1])
    with pytest.raises(SourceMissingError, match="w.mp4: video file does not exist"):
        VideoFileSource(str(data / "w.mp4")).count()
    with pytest.raises(SampleLoadError, match="img_00008.jpg: missing frame"):
        FolderSource(str(data / "frames" / "a")).read([1, 8])
    with pytest.raises(SampleLoadError, match=r"s.lmdb:frames/a/img_00008.jpg: missing frame"):
        sources(data)["lmdb"].read([8])
    with pytest.raises(SampleLoadError, match=r"v.mp4: video has 9 decodable frames but frame 10"):
        sources(data)["video"].read([10])
    (data / "frames" / "a" / "img_00004.jpg").unlink()
    with pytest.raises(SampleLoadError, match="img_00004.jpg is missing but later frames exist"):
        FolderSource(str(data / "frames" / "a")).count()
    with pytest.raises(SampleLoadError, match="no frame named '00001.jpg'"):
        FolderSource(str(data / "frames" / "a"), "{:05d}.jpg").count()
    # Workers pickle errors: the class and both fields survive.
    err = pickle.loads(pickle.dumps(SourceMissingError("p", "r")))
    assert type(err) is SourceMissingError and (err.path, err.reason) == ("p", "r")


@pytest.mark.parametrize("kind", ["folder", "lmdb", "video"])
def test_check_reports_without_raising(data, kind):
    source = sources(data)[kind]
    listed = 9 if kind == "video" else 7
    assert source.check(listed) == [] and source.check(listed, full=True) == []
    problems = source.check(listed + 1, full=True)
    assert len(problems) == 1
    name, reason = problems[0]
    assert reason == ("video decodes to 9 frames, list says 10" if kind == "video" else "missing frame")


def test_open_source_from_a_path_alone(data):
    folder = open_source(str(data / "frames" / "b c"))
    assert isinstance(folder, FolderSource) and folder.count() == 3
    assert isinstance(open_source(str(data / "v.mp4")), VideoFileSource)
    video = open_source(str(data / "s.lmdb" / "frames" / "b c"))  # a video inside a store
    assert isinstance(video, LmdbSource) and video.video == "frames/b c" and video.count() == 3
    assert numbers_of(video.read([3])) == [3]


@pytest.mark.parametrize("name, message", [
    ("nothing", "no such frame folder, video file or video in an LMDB frame store"),
    ("notes.txt", "not a frame folder, nor a video file"),
    ("s.lmdb", "an LMDB frame store, not one video"),
    ("s.lmdb/frames/zz", "holds no video 'frames/zz'"),
])
def test_a_path_that_is_no_source_is_refused_naming_it(data, name, message):
    (data / "notes.txt").write_text("hello")
    with pytest.raises(FrameSourceError, match=message) as err:
        open_source(str(data / name))
    assert str(err.value).startswith(f"{data / name}: ")


def test_any_file_is_a_video_when_extensions_are_not_checked(data):
    (data / "clip.bin").write_bytes((data / "v.mp4").read_bytes())
    assert open_source(str(data / "clip.bin"), video_extensions=None).count() == 9


def test_listed_source_chooses_video_then_store_then_folder(data):
    store = FrameStore(str(data / "s.lmdb"))
    assert isinstance(listed_source(str(data), "v.mp4", video=True, store=store), VideoFileSource)
    assert isinstance(listed_source(str(data), "frames/a", store=store), LmdbSource)
    assert isinstance(listed_source(str(data), "frames/a"), FolderSource)


def test_rgb_arrays_decode_a_repeated_frame_once(data):
    frames = FolderSource(str(data / "frames" / "a")).read([5, 5])
    arrays = rgb_arrays(frames, ["x", "x"])
    assert arrays[0] is arrays[1]


def test_dataset_messages_of_video_sources_keep_the_listed_count(data):
    write_list(data / "v.txt", [("v.mp4", 12, 0), ("gone.mp4", 3, 0)])
    ds = TSNDataSet(str(data), str(data / "v.txt"), num_segments=2, mode="val", video=True)
    with pytest.raises(SampleLoadError) as err:
        ds[0]
    assert err.value.path.endswith("v.mp4")
    assert "video has 9 decodable frames" in err.value.reason and f"(listed at {data / 'v.txt'}:1 with 12 frames)" \
        in err.value.reason
    with pytest.raises(SampleLoadError) as err:
        ds[1]
    assert err.value.reason == f"video file does not exist (listed at {data / 'v.txt'}:2)"
