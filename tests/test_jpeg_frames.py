"""Colour JPEG frames are opened by libjpeg-turbo's header reader, not PIL's parser (ops/jpeg_frames.py),
and give exactly the pixels, sizes and errors of the PIL path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ops import jpeg_frames
from ops.dataset import SampleLoadError, TSNDataSet
from ops.frame_sources import FolderSource, decode_image_bytes
from ops.jpeg_frames import EncodedJpeg
from ops.transforms import FrameDecodeError, eval_transform, train_transform
from tests.helpers_data import make_frames

pytestmark = pytest.mark.skipif(jpeg_frames.simplejpeg is None, reason="simplejpeg is not installed")


@pytest.fixture
def no_pil_open(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("PIL opened a colour JPEG frame")

    monkeypatch.setattr(Image, "open", refuse)


def test_a_colour_jpeg_frame_is_opened_without_pil(tmp_path, no_pil_open):
    make_frames(tmp_path / "v", 3, size=(40, 30))
    frames = FolderSource(str(tmp_path / "v")).read([1, 2, 2])
    assert all(isinstance(f, EncodedJpeg) for f in frames) and frames[1] is frames[2]
    assert frames[0].size == (40, 30)


def test_grey_and_png_frames_are_still_pil_images(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    Image.fromarray(np.full((30, 40), 90, np.uint8)).save(folder / "img_00001.jpg")
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(folder / "img_00002.jpg", format="PNG")
    frames = FolderSource(str(folder)).read([1, 2])
    assert all(isinstance(f, Image.Image) for f in frames)


@pytest.mark.parametrize("mode", ["train", "val"])
def test_clips_have_the_pixels_of_the_pil_path(tmp_path, monkeypatch, mode):
    make_frames(tmp_path / "frames" / "a", 8, size=(48, 36), pattern=True)
    (tmp_path / "list.txt").write_text("frames/a 8 0\n")
    transform = train_transform(32, 40, flip=True) if mode == "train" else eval_transform(32, 40)
    ds = TSNDataSet(str(tmp_path), str(tmp_path / "list.txt"), num_segments=2, new_length=2, mode=mode,
                    transform=transform, seed=3)
    fast, label = ds[0]
    monkeypatch.setattr(jpeg_frames, "simplejpeg", None)  # header and decode through PIL
    slow, _ = ds[0]
    assert label == 0 and fast.shape == (12, 32, 32)
    assert fast.shape == slow.shape and bool((fast == slow).all())


def test_the_data_check_decodes_with_the_training_decoder_and_names_a_truncated_frame(tmp_path):
    make_frames(tmp_path / "v", 1, size=(64, 48), pattern=True)
    data = (tmp_path / "v" / "img_00001.jpg").read_bytes()
    decode_image_bytes(data, "good.jpg")
    with pytest.raises(SampleLoadError, match="cut.jpg: cannot decode image"):
        decode_image_bytes(data[: len(data) // 2], "cut.jpg")


def test_a_truncated_frame_in_a_clip_is_named_by_its_index(tmp_path):
    make_frames(tmp_path / "v", 2, size=(64, 48), pattern=True)
    cut = tmp_path / "v" / "img_00002.jpg"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    frames = FolderSource(str(tmp_path / "v")).read([1, 2])
    assert all(isinstance(f, EncodedJpeg) for f in frames)  # the header is intact
    with pytest.raises(FrameDecodeError) as err:
        eval_transform(32)(frames, np.random.default_rng(0))
    assert err.value.frame_index == 1
