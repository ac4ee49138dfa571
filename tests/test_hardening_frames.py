"""Hardening: a frame whose decoder fails in any way is that sample's problem, never the run's.

A JPEG header claiming 20000 x 20000 pixels makes PIL raise ``DecompressionBombError``
(not an ``OSError``); frames above :data:`ops.video_reader.MAX_FRAME_PIXELS` are refused
before decoding; any other decoder exception (PIL, PyAV, numpy) becomes a
``SampleLoadError`` naming the file and the list line. Each entry point then applies
its bad-data policy: training replaces the sample, ``--check-data full`` and
``tools/check_data.py --full`` list it, ``test_models.py --skip-bad`` leaves it out.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from ops import frame_sources as dataset_module  # _open_image_bytes moved to ops.frame_sources
from ops import video_reader
from ops.dataset import SampleLoadError, TSNDataSet, check_records, parse_list_file
from ops.video_reader import MAX_FRAME_PIXELS, VideoReadError, read_frames
from ops.jpeg_frames import EncodedJpeg
from tests.helpers_data import make_frames, make_video
from tests.eval_support import make_dataset, run_eval, save_ours, tiny_model
from tests.train_support import make_tiny_dataset, train
from tools import check_data


def jpeg_claiming(width: int, height: int) -> bytes:
    """A valid small JPEG whose frame header (SOF0) is patched to claim ``width x height``."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


BOMB = jpeg_claiming(20000, 20000)


def plant_bomb(folder: Path) -> None:
    for frame in folder.iterdir():
        frame.write_bytes(BOMB)


# ------------------------------------------------------------------ the frame-reading layer


def test_a_header_above_the_pixel_limit_is_refused_naming_the_frame_and_list_line(tmp_path):
    make_frames(tmp_path / "frames" / "a", 3)
    make_frames(tmp_path / "frames" / "b", 3)
    (tmp_path / "list.txt").write_text("frames/a 3 0\nframes/b 3 0\n")
    # Above PIL's own bomb limit (an exception PIL does not derive from OSError) ...
    plant_bomb(tmp_path / "frames" / "b")
    ds = TSNDataSet(str(tmp_path), str(tmp_path / "list.txt"), num_segments=1, mode="val")
    ds[0]
    with pytest.raises(SampleLoadError) as err:
        ds[1]
    assert "frames/b/img_0000" in err.value.path and f"{tmp_path / 'list.txt'}:2" in err.value.reason
    assert "20000x20000" in err.value.reason and str(MAX_FRAME_PIXELS) in err.value.reason
    # ... and just above our limit, which PIL would still decode (only warning above 89 Mpx).
    side = int(MAX_FRAME_PIXELS**0.5) + 1
    plant_bomb_bytes = jpeg_claiming(side, side)
    for frame in (tmp_path / "frames" / "b").iterdir():
        frame.write_bytes(plant_bomb_bytes)
    with pytest.raises(SampleLoadError, match=rf"{side}x{side}"):
        ds[1]


def test_a_header_at_the_limit_is_accepted_by_the_opener():
    width = 8192
    height = MAX_FRAME_PIXELS // width
    img = dataset_module._open_image_bytes(jpeg_claiming(width, height), "frame.jpg")
    assert img.size == (width, height)  # opened lazily: nothing was decoded


def test_any_exception_of_the_decoder_becomes_a_sample_load_error(tmp_path, monkeypatch):
    make_frames(tmp_path / "frames" / "a", 3)
    (tmp_path / "list.txt").write_text("frames/a 3 0\n")

    def broken_convert(self, *args, **kwargs):
        raise struct.error("unpack requires a buffer of 4 bytes")  # what a malformed chunk can raise

    monkeypatch.setattr(Image.Image, "convert", broken_convert)  # PIL's decoder
    monkeypatch.setattr(EncodedJpeg, "rgb", broken_convert)  # libjpeg-turbo's, for colour JPEGs
    ds = TSNDataSet(str(tmp_path), str(tmp_path / "list.txt"), num_segments=1, mode="val")
    with pytest.raises(SampleLoadError, match="unpack requires") as err:
        ds[0]
    assert "frames/a/img_0000" in err.value.path and f"{tmp_path / 'list.txt'}:1" in err.value.reason

    def broken_transform(frames, rng):
        np.asarray(frames[0]).reshape(7, -1)  # a numpy error while decoding/transforming this clip

    ds = TSNDataSet(str(tmp_path), str(tmp_path / "list.txt"), num_segments=1, mode="val",
                    transform=broken_transform)
    monkeypatch.undo()
    with pytest.raises(SampleLoadError, match="ValueError") as err:
        ds[0]
    assert err.value.path.endswith("frames/a") and f"{tmp_path / 'list.txt'}:1" in err.value.reason


class _FailingContainer:
    """A real PyAV container whose decoding raises a non-FFmpeg exception after the first frame."""

    def __init__(self, container):
        self._c = container

    def __getattr__(self, name):
        return getattr(self._c, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.close()

    def decode(self, *args, **kwargs):
        for i, frame in enumerate(self._c.decode(*args, **kwargs)):
            if i == 1:
                raise IndexError("list index out of range")
            yield frame


def test_any_exception_of_pyav_becomes_a_video_read_error_and_a_sample_load_error(tmp_path, monkeypatch):
    video = make_video(tmp_path / "v.mp4", 6)
    real_open = video_reader.av.open
    monkeypatch.setattr(video_reader.av, "open", lambda path: _FailingContainer(real_open(path)))
    with pytest.raises(VideoReadError, match="IndexError"):
        read_frames(str(video), [0, 3])
    with pytest.raises(VideoReadError, match="IndexError"):
        video_reader.count_frames(str(video), decode=True)
    (tmp_path / "list.txt").write_text("v.mp4 6 0\n")
    ds = TSNDataSet(str(tmp_path), str(tmp_path / "list.txt"), num_segments=2, mode="val", video=True)
    with pytest.raises(SampleLoadError, match="IndexError") as err:
        ds[0]
    assert err.value.path == str(video) and f"{tmp_path / 'list.txt'}:1" in err.value.reason
    problems = check_records(parse_list_file(str(tmp_path / "list.txt")), str(tmp_path), video=True,
                             check_frames=True)
    assert len(problems) == 1 and "list.txt:1" in problems[0] and "IndexError" in problems[0]


def test_a_video_above_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    video = make_video(tmp_path / "v.mp4", 3, size=(64, 48))
    monkeypatch.setattr(video_reader, "MAX_FRAME_PIXELS", 64 * 48 - 1)
    with pytest.raises(VideoReadError, match=r"64x48"):
        read_frames(str(video), [0])
    with pytest.raises(VideoReadError, match=r"64x48"):
        video_reader.count_frames(str(video))


def test_lmdb_frames_name_the_list_line_and_are_decoded_by_the_full_check(tmp_path):
    pytest.importorskip("lmdb")
    from tools import build_lmdb

    make_frames(tmp_path / "frames" / "a", 3)
    make_frames(tmp_path / "frames" / "b", 3)
    plant_bomb(tmp_path / "frames" / "b")
    (tmp_path / "list.txt").write_text("frames/a 3 0\nframes/b 3 0\n")
    store = tmp_path / "store.lmdb"
    build_lmdb.main(build_lmdb.get_args_parser().parse_args(
        ["--root_path", str(tmp_path), "--list_file", str(tmp_path / "list.txt"), "--output", str(store)]))
    ds = TSNDataSet(str(tmp_path), str(tmp_path / "list.txt"), num_segments=1, mode="val", lmdb_path=str(store))
    with pytest.raises(SampleLoadError, match="20000x20000") as err:
        ds[1]
    assert f"{tmp_path / 'list.txt'}:2" in err.value.reason
    problems = check_records(parse_list_file(str(tmp_path / "list.txt")), str(tmp_path), check_frames=True,
                             lmdb_path=str(store))
    assert len(problems) == 3 and all("list.txt:2" in p and "20000x20000" in p for p in problems)


# ------------------------------------------------------------------ the entry points


def test_training_replaces_the_sample_and_logs_it_to_bad_samples_and_log_txt(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=4, n_val=2)
    plant_bomb(data / "frames" / "train_002")
    train(data, tmp_path, "--epochs", "1", "--check-data", "quick", "--max-bad-fraction", "0.5")
    rows = [line.split("\t") for line in
            (tmp_path / "log" / "run" / "bad_samples.tsv").read_text().splitlines()[1:]]
    assert rows, "the bomb frame was never read"
    for _, _, _, index, path, reason, replacement in rows:
        assert index == "2" and "train_002/img_0000" in path and int(replacement) != 2
        assert "20000x20000" in reason and f"{data / 'train_list.txt'}:3" in reason
    log = (tmp_path / "log" / "run" / "log.txt").read_text()
    assert "bad training sample" in log and "train_002/img_0000" in log and "20000x20000" in log


def test_check_data_full_in_main_and_in_the_tool_names_the_frame_and_line(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=3, n_val=1)
    plant_bomb(data / "frames" / "train_001")
    with pytest.raises(main.DataCheckError) as err:
        train(data, tmp_path / "out", "--check-data", "full")
    assert f"{data / 'train_list.txt'}:2:" in str(err.value) and "train_001/img_00001.jpg" in str(err.value)
    assert "20000x20000" in (tmp_path / "out" / "log" / "run" / "log.txt").read_text()
    argv = ["--root_path", str(data), "--list_file", "train_list.txt", "--full", "--workers", "2"]
    problems = check_data.main(check_data.get_args_parser().parse_args(argv))
    assert len(problems) == 6  # every frame of the folder, each named
    assert all(p.startswith(f"{data / 'train_list.txt'}:2: ") and "20000x20000" in p for p in problems)


def test_test_models_stops_naming_the_frame_or_skips_it_with_skip_bad(tmp_path):
    root = make_dataset(tmp_path / "data", 3)
    plant_bomb(root / "frames" / "video1")
    weights = save_ours(tmp_path / "rgb.pth.tar", tiny_model("RGB"))
    with pytest.raises(SampleLoadError, match=r"video1/\d+\.jpg.*20000x20000"):
        run_eval(root, weights, tmp_path / "stop")
    metrics, saved = run_eval(root, weights, tmp_path / "skip", "--skip-bad")
    assert metrics["num_skipped"] == 1 and saved["indices"].tolist() == [0, 2]
    skipped = json.loads((tmp_path / "skip" / "metrics.json").read_text())["skipped"]
    assert list(skipped) == ["frames/video1"] and "20000x20000" in skipped["frames/video1"]
