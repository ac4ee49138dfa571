"""Group transforms: one random draw per clip from an explicit generator; the evaluation
path gives the published pipeline's pixels exactly."""

import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

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


#: ImageNet mean and std of the published GroupNormalize, written here (not imported from the code under test).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ScriptedDraws(random.Random):
    """A generator whose draws are given: ``randint`` returns ``indices`` in turn (each checked to lie in
    the asked range), ``random`` returns ``uniforms`` in turn."""

    def __init__(self, indices, uniforms):
        super().__init__(0)
        self.indices, self.uniforms = list(indices), list(uniforms)
        self.ranges = []

    def randint(self, low, high):
        value = self.indices.pop(0)
        self.ranges.append((low, high))
        assert low <= value <= high
        return value

    def random(self):
        return self.uniforms.pop(0)


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
        assert imgs[0].size == (53, 40)  # 71x53 -> shorter side 40: int(40 * 71 / 53) = 53
        ref = []
        # Steps (53 - 32) // 4 = 5 and (40 - 32) // 4 = 2: the 4 corners, then the centre.
        for ox, oy in [(0, 0), (20, 0), (0, 8), (20, 8), (10, 4)]:
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

    # Draws of the published GroupMultiScaleCrop on a 71x53 clip, output 40, written out by hand.
    # Candidate sides: int(53 * [1, .875, .75, .66]) = 53, 46, 39, 34; 39 is within 3 of 40 -> 40.
    # Candidate (w, h), h-major, |i - j| <= 1: 0 (53,53) 1 (46,53) 2 (53,46) 3 (46,46) 4 (40,46)
    #   5 (46,40) 6 (40,40) 7 (34,40) 8 (40,34) 9 (34,34).
    # Positions on steps ws = (71 - w) // 4, hs = (53 - h) // 4, in the published order:
    #   (0,0) (4,0) (0,4) (4,4) (2,2) (0,2) (4,2) (2,4) (2,0) (1,1) (3,1) (1,3) (3,3).
    # The flip is taken when the uniform draw is below 0.5.
    DRAWS = [
        # (size index, position index, uniform), expected box (x, y, w, h), flipped
        ((6, 4, 0.3), (14, 6, 40, 40), True),  # (40,40) at the centre: ws 7, hs 3 -> (14, 6)
        ((2, 1, 0.7), (16, 0, 53, 46), False),  # (53,46) top right: ws 4, hs 1 -> (16, 0)
        ((9, 12, 0.5), (27, 12, 34, 34), False),  # (34,34) at (3,3): ws 9, hs 4 -> (27, 12)
        ((0, 9, 0.1), (4, 0, 53, 53), True),  # (53,53) at (1,1): ws 4, hs 0 -> (4, 0)
    ]

    @pytest.mark.parametrize("draw, box, flipped", DRAWS)
    def test_given_draws_crop_resize_and_flip_as_published(self, clip, draw, box, flipped):
        """The crop of a given draw, cut and resized with PIL here; pixels differ by interpolation only."""
        size_index, position_index, uniform = draw
        t = train_transform(40, None, flip=True)
        rng = ScriptedDraws([size_index, position_index], [uniform])
        assert t.draw(71, 53, rng) == (box, flipped)
        assert rng.ranges == [(0, 9), (0, 12)] and not rng.indices and not rng.uniforms
        out = t(open_lazy(clip), ScriptedDraws([size_index, position_index], [uniform]))
        x, y, w, h = box
        ref = []
        for p in clip:
            im = Image.open(p).convert("RGB").crop((x, y, x + w, y + h))
            if (w, h) != (40, 40):
                im = im.resize((40, 40), Image.BILINEAR)
            ref.append(im.transpose(Image.FLIP_LEFT_RIGHT) if flipped else im)
        ref = published_to_tensor(ref)
        std = torch.tensor(IMAGENET_STD).repeat(len(clip)).view(-1, 1, 1)
        err = ((out - ref) * std * 255).abs()
        if (w, h) == (40, 40):
            assert err.max() < 1e-3  # no resize: the same pixels
        else:
            assert err.mean() < 0.25 and err.max() < 2.5  # measured: mean 0.01, max 1 grey level

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
