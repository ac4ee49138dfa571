"""The fast clip path of ops.transforms: exact JPEG decode of a whole clip (simplejpeg, PIL without it),
batched crop + resize, numpy transposition, per-frame normalisation; checked against the published
pipeline's own steps on 340x256 frames (the published vid2img size)."""

import io
import logging
import random

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image, ImageFile

import ops.transforms as transforms
from ops.transforms import FrameDecodeError, decode_clip, eval_transform, normalize_uint8, planar, train_transform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

pytestmark = pytest.mark.skipif(transforms.simplejpeg is None, reason="simplejpeg is not installed")


def jpeg_bytes(width, height, seed, subsampling=2, quality=92, mode="RGB"):
    """A textured frame (smooth gradients plus noise), encoded as real extracted frames are."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(xx[..., None] / (7 + np.arange(3)) + yy[..., None] / 11 + seed)
    arr = (base + rng.normal(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def lazy(datas):
    """As the dataset's frame sources give frames: opened from their bytes, not decoded."""
    return [Image.open(io.BytesIO(d)) for d in datas]


def published_decode(d):
    return Image.open(io.BytesIO(d)).convert("RGB")


def published_tail(imgs):
    """Stack + ToTorchFormatTensor + GroupNormalize of the published code, per channel."""
    arr = np.concatenate([np.asarray(i) for i in imgs], axis=2)
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div(255)
    rep = t.shape[0] // 3
    for c, m, s in zip(t, list(IMAGENET_MEAN) * rep, list(IMAGENET_STD) * rep):
        c.sub_(m).div_(s)
    return t


def published_train(datas, crop, box, flipped):
    """GroupMultiScaleCrop (crop all, then PIL bilinear resize all) + GroupRandomHorizontalFlip + tail."""
    x, y, w, h = box
    group = [published_decode(d).crop((x, y, x + w, y + h)) for d in datas]
    group = [img.resize((crop, crop), Image.BILINEAR) for img in group]
    if flipped:
        group = [img.transpose(Image.FLIP_LEFT_RIGHT) for img in group]
    return published_tail(group)


@pytest.fixture
def pil_decodes(monkeypatch):
    """Counts PIL's decodes (ImageFile.load) from the moment the fixture is requested."""
    calls = []
    load = ImageFile.ImageFile.load

    def counting_load(self):
        calls.append(self)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    return calls


@pytest.fixture(scope="module")
def frames_340x256():
    return [jpeg_bytes(340, 256, seed) for seed in range(4)]


@pytest.mark.parametrize("size, subsampling", [((340, 256), 2), ((71, 53), 2), ((71, 53), 0), ((65, 47), 1)])
def test_decode_clip_gives_the_published_pixels_without_pil(size, subsampling, pil_decodes):
    datas = [jpeg_bytes(*size, seed, subsampling) for seed in range(3)]
    ref = np.stack([np.asarray(published_decode(d)) for d in datas])
    pil_decodes.clear()
    out = decode_clip(lazy(datas))
    assert out.dtype == np.uint8 and out.shape == ref.shape and out.flags.c_contiguous
    assert np.array_equal(out, ref)
    assert not pil_decodes  # RGB JPEGs go through simplejpeg


def test_decode_clip_of_files_and_repeated_and_grey_frames(tmp_path, pil_decodes):
    paths = []
    for i, mode in enumerate(["RGB", "L"]):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(jpeg_bytes(48, 32, i, mode=mode))
    ref = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    pil_decodes.clear()
    a = Image.open(paths[0])  # opened from a path, as test code and tools do
    grey = Image.open(paths[1])
    out = decode_clip([a, a, grey])
    assert np.array_equal(out[0], ref[0]) and np.array_equal(out[1], ref[0]) and np.array_equal(out[2], ref[1])
    assert {id(img) for img in pil_decodes} == {id(grey)}  # PIL converts a grey frame to RGB, as published


def test_without_simplejpeg_pil_decodes_the_same_pixels_and_says_so(monkeypatch, caplog, frames_340x256):
    fast = decode_clip(lazy(frames_340x256))
    monkeypatch.setattr(transforms, "simplejpeg", None)
    monkeypatch.setattr(transforms, "_warned_no_simplejpeg", False)
    with caplog.at_level(logging.WARNING, logger="ops.transforms"):
        slow = decode_clip(lazy(frames_340x256))
    assert np.array_equal(fast, slow)
    assert "pip install simplejpeg" in caplog.text


def test_corrupt_frame_names_its_index_with_the_fast_decoder(frames_340x256, pil_decodes):
    good = frames_340x256[0]
    truncated = good[: len(good) // 2]
    for t in (train_transform(224, None, flip=False), eval_transform(224)):
        with pytest.raises(FrameDecodeError) as e:
            t(lazy([good, truncated]), np.random.default_rng(0))
        assert e.value.frame_index == 1
    assert not pil_decodes


@pytest.mark.parametrize("seed", range(6))
def test_train_clip_is_the_published_crop_within_two_grey_levels(seed, frames_340x256, pil_decodes):
    """Same draw as the published GroupMultiScaleCrop + flip; only resize rounding differs (torch's port
    of PIL's bilinear): measured at most 2 grey levels (enlarged crops), mean < 0.08."""
    t = train_transform(224, None, flip=True)
    box, flipped = t.draw(340, 256, random.Random(seed))
    ref = published_train(frames_340x256, 224, tuple(int(v) for v in box), flipped)
    pil_decodes.clear()
    out = t(lazy(frames_340x256), random.Random(seed))
    assert not pil_decodes
    err = ((out - ref) * torch.tensor(IMAGENET_STD).repeat(4).view(-1, 1, 1) * 255).abs()
    assert err.max() <= 2.01 and err.mean() < 0.1, (box, flipped, err.max(), err.mean())


def test_train_draws_cover_crops_without_resize_and_both_flips(frames_340x256, pil_decodes):
    """Crop 224x224 (no resize) is a pure copy: equal to the published clip up to float rounding."""
    t = train_transform(224, None, flip=True)
    seen = set()
    for seed in range(200):
        box, flipped = t.draw(340, 256, random.Random(seed))
        if box[2:] == (224, 224) and flipped not in seen:
            seen.add(flipped)
            ref = published_train(frames_340x256, 224, tuple(int(v) for v in box), flipped)
            pil_decodes.clear()
            out = t(lazy(frames_340x256), random.Random(seed))
            assert not pil_decodes
            assert (out - ref).abs().max() < 1e-5
    assert seen == {False, True}


@pytest.mark.parametrize("num_crops", [1, 3, 10])
def test_eval_is_the_published_pipeline_exactly(num_crops, frames_340x256, pil_decodes):
    scale = 256
    t = eval_transform(224, scale, num_crops=num_crops)
    resize, center = T.Resize(scale, T.InterpolationMode.BILINEAR), T.CenterCrop(224)
    group = [resize(published_decode(d)) for d in frames_340x256]
    if num_crops == 1:
        ref = published_tail([center(img) for img in group])
    else:
        refs = []
        for x, y, mirrored in t.offsets(*group[0].size):
            crops = [img.crop((x, y, x + 224, y + 224)) for img in group]
            refs.append(published_tail([c.transpose(Image.FLIP_LEFT_RIGHT) if mirrored else c for c in crops]))
        ref = torch.cat(refs)
    pil_decodes.clear()
    out = t(lazy(frames_340x256))
    assert not pil_decodes
    assert torch.equal(out, ref)


def test_eval_resize_of_the_shorter_side_is_exact(pil_decodes):
    datas = [jpeg_bytes(400, 300, seed) for seed in range(2)]
    t = eval_transform(224, 256)
    resize, center = T.Resize(256, T.InterpolationMode.BILINEAR), T.CenterCrop(224)
    ref = published_tail([center(resize(published_decode(d))) for d in datas])
    pil_decodes.clear()
    assert torch.equal(t(lazy(datas)), ref)
    assert not pil_decodes


def test_planar_transposes_and_mirrors():
    frames = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    out = planar(frames[:, :, 1:])
    assert out.is_contiguous() and out.shape == (2, 3, 3, 3)
    assert torch.equal(out, torch.from_numpy(frames[:, :, 1:]).permute(0, 3, 1, 2))
    assert torch.equal(planar(frames, mirror=True), torch.from_numpy(frames).permute(0, 3, 1, 2).flip(-1))


def test_normalize_uint8_any_strides_and_into_out():
    x = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # channels-last view
    ref = x.contiguous().float().div(255)
    ref = ref.sub(torch.tensor(IMAGENET_MEAN).view(3, 1, 1)).div(torch.tensor(IMAGENET_STD).view(3, 1, 1))
    out = torch.empty(2, 3, 5, 6)
    assert normalize_uint8(x, IMAGENET_MEAN, IMAGENET_STD, out=out) is out
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match="contiguous float32"):
        normalize_uint8(x, IMAGENET_MEAN, IMAGENET_STD, out=torch.empty(2, 3, 5, 6, dtype=torch.float64))
