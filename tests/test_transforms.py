"""Group transforms: one random draw per clip from an explicit generator; the evaluation
path gives the published pipeline's pixels exactly."""

import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from ops.modalities import IMAGENET_MEAN, IMAGENET_STD
from ops.transforms import (
    FrameDecodeError,
    center_crop_offset,
    draw_multiscale_crop,
    eval_transform,
    fixed_crop_offsets,
    multiscale_crop_sizes,
    scaled_size,
    train_transform,
)
from tests.helpers_data import make_frames


def published_to_tensor(imgs):
    """Stack + ToTorchFormatTensor + GroupNormalize of the published code, per channel."""
    arr = np.concatenate([np.asarray(i) for i in imgs], axis=2)
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div(255)
    mean = list(IMAGENET_MEAN) * (t.shape[0] // 3)
    std = list(IMAGENET_STD) * (t.shape[0] // 3)
    for c, m, s in zip(t, mean, std):
        c.sub_(m).div_(s)
    return t


def open_lazy(paths):
    return [Image.open(p) for p in paths]


@pytest.fixture
def clip(tmp_path):
    folder = make_frames(tmp_path / "v", 3, size=(71, 53), pattern=True)
    return sorted(str(p) for p in folder.iterdir())


class TestGeometry:
    def test_scaled_size_follows_torchvision(self):
        assert scaled_size(340, 256, 256) == (340, 256)
        assert scaled_size(176, 100, 256) == (450, 256)
        assert scaled_size(100, 176, 128) == (128, 225)

    def test_center_crop_offset_rounds_like_torchvision(self):
        assert center_crop_offset(341, 256, 224, 224) == (int(round(58.5)), 16)

    def test_thirteen_fixed_positions(self):
        offs = fixed_crop_offsets(340, 256, 224, 224)
        assert len(offs) == 13 and len(fixed_crop_offsets(340, 256, 224, 224, False)) == 5
        assert offs[:5] == [(0, 0), (116, 0), (0, 32), (116, 32), (58, 16)]

    def test_multiscale_sizes_allow_one_step_of_distortion(self):
        sizes = multiscale_crop_sizes(340, 256, 224)
        # 256*[1,.875,.75,.66] = 256, 224, 192, 168 (224 snapped); |i-j| <= 1 -> 10 pairs.
        assert len(sizes) == 10
        assert (256, 224) in sizes and (256, 192) not in sizes and (168, 168) in sizes

    def test_snapping_to_the_crop_size(self):
        assert (224, 224) in multiscale_crop_sizes(300, 255, 224)  # .875*255 = 223 -> 224

    def test_crop_inside_image_for_both_generator_kinds(self):
        for seed in range(50):
            for r in (np.random.default_rng(seed), random.Random(seed)):
                x, y, w, h = draw_multiscale_crop(120, 90, 80, r)
                assert 0 <= x and 0 <= y and x + w <= 120 and y + h <= 90


class TestEval:
    @pytest.mark.parametrize("crop, scale", [(48, 55), (40, 53), (32, 60)])
    def test_single_crop_equals_published_pixels(self, clip, crop, scale):
        t = eval_transform(crop, scale, num_crops=1, full_res=False)
        ref = [TF.center_crop(TF.resize(Image.open(p).convert("RGB"), scale), crop) for p in clip]
        out = t(open_lazy(clip), None)
        assert out.shape == (3 * len(clip), crop, crop)
        assert torch.equal(out, published_to_tensor(ref))

    def test_default_scale_is_256_over_224(self):
        t = eval_transform(224)
        assert (t.crop_size, t.scale_size) == (224, 256)

    def test_full_res_three_crops_along_longer_side(self, clip):
        t = eval_transform(40, 48, num_crops=3, full_res=True)
        assert t.crop_size == 48
        out = t(open_lazy(clip))
        assert out.shape == (3 * 3 * len(clip), 48, 48)
        imgs = [TF.resize(Image.open(p).convert("RGB"), 48) for p in clip]
        w, h = imgs[0].size
        ws, hs = (w - 48) // 4, (h - 48) // 4
        ref = []
        for ox, oy in [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 2 * hs)]:
            ref += [im.crop((ox, oy, ox + 48, oy + 48)) for im in imgs]
        assert torch.equal(out, published_to_tensor(ref))

    @pytest.mark.parametrize("num_crops", [5, 10])
    def test_oversample_equals_published_pixels(self, clip, num_crops):
        t = eval_transform(32, 40, num_crops=num_crops)
        out = t(open_lazy(clip))
        imgs = [TF.resize(Image.open(p).convert("RGB"), 40) for p in clip]
        w, h = imgs[0].size
        ref = []
        for ox, oy in fixed_crop_offsets(w, h, 32, 32, more_fix_crop=False):
            crops = [im.crop((ox, oy, ox + 32, oy + 32)) for im in imgs]
            ref += crops
            if num_crops == 10:
                ref += [c.transpose(Image.FLIP_LEFT_RIGHT) for c in crops]
        assert out.shape == (num_crops * len(clip) * 3, 32, 32)
        assert torch.equal(out, published_to_tensor(ref))

    def test_uint8_arrays_give_the_same_result_as_images(self, clip):
        t = eval_transform(32, 40)
        arrays = [np.asarray(Image.open(p).convert("RGB")) for p in clip]
        assert torch.equal(t(arrays), t(open_lazy(clip)))

    def test_bad_options(self):
        with pytest.raises(ValueError, match="num_crops"):
            eval_transform(224, 256, num_crops=4)
        with pytest.raises(ValueError, match="smaller"):
            eval_transform(224, 200)


class TestTrain:
    def test_shape_and_one_draw_for_all_frames(self, tmp_path):
        folder = make_frames(tmp_path / "same", 1, size=(90, 70), pattern=True)
        path = str(next(folder.iterdir()))
        t = train_transform(32, None, flip=True)
        for seed in range(10):
            out = t(open_lazy([path] * 5), np.random.default_rng(seed)).view(5, 3, 32, 32)
            for i in range(1, 5):
                assert torch.equal(out[i], out[0])

    def test_randomness_comes_only_from_the_given_generator(self, clip):
        t = train_transform(32, None, flip=True)
        random.seed(1), np.random.seed(1), torch.manual_seed(1)
        a = t(open_lazy(clip), np.random.default_rng(7))
        random.seed(2), np.random.seed(2), torch.manual_seed(2)
        b = t(open_lazy(clip), np.random.default_rng(7))
        assert torch.equal(a, b)
        outs = {t(open_lazy(clip), np.random.default_rng(s)).sum().item() for s in range(20)}
        assert len(outs) > 5

    def test_close_to_published_crop_resize_flip(self, clip):
        """Same draw as the published GroupMultiScaleCrop + flip; pixels differ by interpolation only."""
        t = train_transform(40, None, flip=True)
        for seed in range(8):
            out = t(open_lazy(clip), np.random.default_rng(seed))
            (x, y, w, h), flipped = t.draw(71, 53, np.random.default_rng(seed))
            ref = []
            for p in clip:
                im = Image.open(p).convert("RGB").crop((x, y, x + w, y + h)).resize((40, 40), Image.BILINEAR)
                ref.append(im.transpose(Image.FLIP_LEFT_RIGHT) if flipped else im)
            ref = published_to_tensor(ref)
            std = torch.tensor(IMAGENET_STD).repeat(len(clip)).view(-1, 1, 1)
            err = ((out - ref) * std * 255).abs()
            assert err.mean() < 3 and err.max() < 40

    def test_flip_never_when_not_allowed(self, clip):
        t = train_transform(40, None, flip=False)
        assert not any(t.draw(71, 53, np.random.default_rng(s))[1] for s in range(50))

    def test_flip_label_map(self, clip):
        t = train_transform(40, None, flip=True, flip_label_map={3: 4, 4: 3})
        labels = {t.apply(open_lazy(clip), np.random.default_rng(s), 3)[1] for s in range(30)}
        assert labels == {3, 4}
        for s in range(30):
            flipped = t.draw(71, 53, np.random.default_rng(s))[1]
            assert t.apply(open_lazy(clip), np.random.default_rng(s), 3)[1] == (4 if flipped else 3)
        assert t.apply(open_lazy(clip), np.random.default_rng(0), 7)[1] == 7
        with pytest.raises(ValueError, match="flip"):
            train_transform(40, None, flip=False, flip_label_map={0: 1})

    def test_draft_decoding_for_large_frames(self, tmp_path):
        folder = make_frames(tmp_path / "big", 2, size=(400, 300), pattern=True)
        paths = sorted(str(p) for p in folder.iterdir())
        t = train_transform(32, None, flip=False)
        imgs = open_lazy(paths)
        out = t(imgs, np.random.default_rng(0))
        assert out.shape == (6, 32, 32)
        assert imgs[0].size[0] < 400  # decoded at a reduced size
        ref = train_transform(32, None, flip=False, draft=False)(open_lazy(paths), np.random.default_rng(0))
        std = torch.tensor(IMAGENET_STD).repeat(2).view(-1, 1, 1)
        assert ((out - ref) * std * 255).abs().mean() < 4

    def test_prescale_draws_on_the_resized_frame(self):
        t = train_transform(32, 64, flip=False, prescale=True)
        for s in range(20):
            (x, y, w, h), _ = t.draw(200, 100, np.random.default_rng(s))
            # Shorter side 100 -> 64: crop sides are at most 64 px there, 100 px here.
            assert max(w, h) <= 100 + 1e-9 and min(w, h) >= 0.66 * 100 - 2

    def test_uint8_arrays(self, clip):
        arrays = [np.asarray(Image.open(p).convert("RGB")) for p in clip]
        t = train_transform(40, None, flip=True)
        out = t(arrays, np.random.default_rng(3))
        assert out.shape == (9, 40, 40) and out.dtype == torch.float32


def test_corrupt_frame_names_its_index(tmp_path, clip):
    bad = tmp_path / "bad.jpg"
    data = open(clip[0], "rb").read()
    bad.write_bytes(data[: len(data) // 2])
    for t in (train_transform(32, None, flip=False), eval_transform(32, 40)):
        with pytest.raises(FrameDecodeError) as e:
            t(open_lazy([clip[0], str(bad)]), np.random.default_rng(0))
        assert e.value.frame_index == 1


def test_frames_of_different_sizes_are_refused(tmp_path):
    a = make_frames(tmp_path / "a", 1, size=(40, 30))
    b = make_frames(tmp_path / "b", 1, size=(50, 30))
    with pytest.raises(FrameDecodeError, match="differs"):
        eval_transform(16, 20)(open_lazy([next(a.iterdir()), next(b.iterdir())]))
