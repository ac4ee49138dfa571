"""TSN group transforms: one random draw per clip, explicit random generators.

A clip is a list of frames (``PIL.Image`` -- possibly opened lazily so that the
transform may decode it in JPEG draft mode -- or ``uint8`` arrays ``[H, W, 3]``).
The builders return a :class:`ClipTransform`::

    t = train_transform(224, 256, flip=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x = t(frames, rng)                       # float tensor [V*F*3, H, W]
    x, label = t.apply(frames, rng, label)   # same, and the label after a possible flip

``V`` is the number of spatial views (crops), ``F = len(frames)``; channels are
ordered view-major, then frame, then RGB. Every random choice (crop size,
position, flip) is taken from ``rng`` -- a ``numpy.random.Generator`` or a
``random.Random`` -- and never from a global generator, so a clip's
augmentation is a function of the generator's seed.

Two paths:

* **evaluation** (:func:`eval_transform`) reproduces the published pipeline to
  the pixel: full JPEG decode, PIL bilinear resize of the shorter side
  (torchvision's size rule), centre / 3 full-resolution / 5 / 10 crops taken
  from the resized image, ``x / 255`` then ``(x - mean) / std`` in float32.
* **training** (:func:`train_transform`) draws the published augmentation
  (multi-scale crop with scales 1, .875, .75, .66 of the shorter side, at most
  one step of aspect distortion, 13 fixed positions; horizontal flip with
  probability 1/2) but decodes in JPEG draft mode when the crop is at least
  twice the output size (then resizes each small drafted frame with PIL's
  exact float box), otherwise crops and resizes all frames of the clip in one
  batched uint8 resize; it flips while copying and converts to float only at
  the end. Pixels differ from the published path by interpolation rounding
  only, which changes the augmentation, not what a model is evaluated on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ops.errors import PanError
from ops.modalities import IMAGENET_MEAN, IMAGENET_STD

Frame = Union[Image.Image, np.ndarray]
Rng = Union[np.random.Generator, random.Random]

#: Scales of the shorter side used by the published multi-scale crop.
TSN_SCALES = (1.0, 0.875, 0.75, 0.66)


class FrameDecodeError(PanError, OSError):
    """A frame of the clip could not be decoded; ``frame_index`` says which one.

    The dataset turns it into a ``SampleLoadError`` naming the file.
    """

    def __init__(self, frame_index: int, reason: str):
        super().__init__(f"frame {frame_index}: {reason}")
        self.frame_index = frame_index
        self.reason = reason


# --------------------------------------------------------------------------- rng


def _randint(rng: Rng, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]`` (both ends included)."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high + 1))
    if isinstance(rng, random.Random):
        return rng.randint(low, high)
    raise TypeError(f"rng must be a numpy Generator or random.Random, got {type(rng).__name__}")


def _uniform(rng: Rng) -> float:
    if isinstance(rng, np.random.Generator):
        return float(rng.random())
    if isinstance(rng, random.Random):
        return rng.random()
    raise TypeError(f"rng must be a numpy Generator or random.Random, got {type(rng).__name__}")


# ---------------------------------------------------------------- geometry (pure)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Size ``(w, h)`` after resizing the shorter side to ``short_side`` (torchvision's rule:
    the longer side is truncated, ``int(short_side * long / short)``)."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def center_crop_offset(width: int, height: int, crop_w: int, crop_h: int) -> tuple[int, int]:
    """Top-left ``(x, y)`` of torchvision's centre crop (Python rounding of the half margin)."""
    return int(round((width - crop_w) / 2.0)), int(round((height - crop_h) / 2.0))


def fixed_crop_offsets(
    image_w: int, image_h: int, crop_w: int, crop_h: int, more_fix_crop: bool = True
) -> list[tuple[int, int]]:
    """TSN's fixed crop positions ``(x, y)`` on a 4x4 grid of steps.

    Corners and centre (5); with ``more_fix_crop`` also the four edge centres and
    the four quarter points (13), in the published order.
    """
    ws, hs = (image_w - crop_w) // 4, (image_h - crop_h) // 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2)]
    if more_fix_crop:
        grid += [(0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(i * ws, j * hs) for i, j in grid]


def full_res_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    """The 3 full-resolution test crops: left, right, centre (along the longer side)."""
    ws, hs = (image_w - crop_w) // 4, (image_h - crop_h) // 4
    return [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 2 * hs)]


def multiscale_crop_sizes(
    image_w: int, image_h: int, crop_size: int, scales: Sequence[float] = TSN_SCALES, max_distort: int = 1
) -> list[tuple[int, int]]:
    """Candidate crop sizes ``(w, h)`` of TSN's multi-scale crop.

    Sides are ``scale * shorter side``, snapped to ``crop_size`` when within 3
    pixels of it; width and height scales differ by at most ``max_distort``
    steps of ``scales``.
    """
    base = min(image_w, image_h)
    sides = [int(base * s) for s in scales]
    sides = [crop_size if abs(s - crop_size) < 3 else s for s in sides]
    return [
        (w, h)
        for i, h in enumerate(sides)
        for j, w in enumerate(sides)
        if abs(i - j) <= max_distort
    ]


def draw_multiscale_crop(
    image_w: int,
    image_h: int,
    crop_size: int,
    rng: Rng,
    scales: Sequence[float] = TSN_SCALES,
    max_distort: int = 1,
    fix_crop: bool = True,
    more_fix_crop: bool = True,
) -> tuple[int, int, int, int]:
    """One draw of TSN's multi-scale crop: ``(x, y, w, h)`` in image pixels.

    Draws a candidate size, then one of the fixed positions (or, without
    ``fix_crop``, a uniform position). Boxes are clipped to the image, since
    snapping to ``crop_size`` may make a side a pixel or two larger than it.
    """
    sizes = multiscale_crop_sizes(image_w, image_h, crop_size, scales, max_distort)
    w, h = sizes[_randint(rng, 0, len(sizes) - 1)]
    if fix_crop:
        offsets = fixed_crop_offsets(image_w, image_h, w, h, more_fix_crop)
        x, y = offsets[_randint(rng, 0, len(offsets) - 1)]
    else:
        x, y = _randint(rng, 0, max(image_w - w, 0)), _randint(rng, 0, max(image_h - h, 0))
    x, y = max(x, 0), max(y, 0)
    return x, y, min(w, image_w - x), min(h, image_h - y)


# ------------------------------------------------------------------ tensors (pure)


def normalize_uint8(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8 [..., 3, H, W]`` -> float32 ``(x / 255 - mean) / std``, same shape, contiguous.

    The operations and their order are those of the published
    ToTorchFormatTensor + GroupNormalize, so results are bit-identical.
    """
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    out = torch.empty(clip.shape, dtype=torch.float32)
    out.copy_(clip)
    return out.div_(255).sub_(m).div_(s)


def normalize_uint8_fused(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Same as :func:`normalize_uint8` up to float rounding (1e-6), in one pass:
    ``x * (1 / (255 std)) - mean / std``. For the training path only."""
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    scale = 1.0 / (255.0 * s)
    shift = -torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) / s
    out = torch.empty(clip.shape, dtype=torch.float32)
    return torch.addcmul(shift, clip, scale, out=out)


# ------------------------------------------------------------------ decoding


def _frame_size(frame: Frame) -> tuple[int, int]:
    if isinstance(frame, Image.Image):
        return frame.size
    if isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8:
        return frame.shape[1], frame.shape[0]
    raise TypeError(
        f"a frame must be a PIL image or a uint8 array [H, W, 3], got "
        f"{type(frame).__name__} {getattr(frame, 'shape', '')} {getattr(frame, 'dtype', '')}"
    )


def _decode_pil(frame: Frame, index: int, draft: tuple[int, int] | None = None) -> Image.Image:
    """Full decode to an RGB PIL image; ``draft`` lets a JPEG decode at a reduced size >= it."""
    if isinstance(frame, np.ndarray):
        return Image.fromarray(frame)
    try:
        if draft is not None and frame.format == "JPEG":
            frame.draft("RGB", draft)
        frame.load()
        return frame if frame.mode == "RGB" else frame.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise FrameDecodeError(index, f"cannot decode image: {e}") from None


def _clip_size(frames: Sequence[Frame]) -> tuple[int, int]:
    if len(frames) == 0:
        raise ValueError("empty clip")
    size = _frame_size(frames[0])
    for i, f in enumerate(frames[1:], 1):
        if _frame_size(f) != size:
            raise FrameDecodeError(i, f"frame size {_frame_size(f)} differs from the clip's {size}")
    return size


# ------------------------------------------------------------------ transforms


class ClipTransform:
    """Base class: ``t(frames, rng) -> Tensor`` and ``t.apply(frames, rng, label) -> (Tensor, label)``."""

    #: Number of spatial views per clip (``V`` of the output shape).
    num_views: int = 1

    def apply(self, frames: Sequence[Frame], rng: Rng, label: int | None = None) -> tuple[torch.Tensor, int | None]:
        raise NotImplementedError

    def __call__(self, frames: Sequence[Frame], rng: Rng) -> torch.Tensor:
        return self.apply(frames, rng)[0]


class TrainTransform(ClipTransform):
    """Multi-scale crop + optional flip, one draw per clip; output ``[F*3, S, S]`` float.

    ``scale_size``: when ``prescale`` is True the crop is drawn on the frame
    resized so that its shorter side is ``scale_size`` (folded into the single
    resize); by default the crop is drawn on the frame as stored, as published.
    """

    def __init__(
        self,
        crop_size: int,
        scale_size: int | None = None,
        flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        flip_label_map: dict[int, int] | None = None,
        *,
        scales: Sequence[float] = TSN_SCALES,
        max_distort: int = 1,
        fix_crop: bool = True,
        more_fix_crop: bool = True,
        prescale: bool = False,
        draft: bool = True,
    ):
        if flip_label_map and not flip:
            raise ValueError("flip_label_map given but flipping is disabled for this dataset")
        if prescale and not scale_size:
            raise ValueError("prescale needs a scale_size")
        self.crop_size = crop_size
        self.scale_size = scale_size
        self.flip = flip
        self.mean, self.std = tuple(mean), tuple(std)
        self.flip_label_map = dict(flip_label_map) if flip_label_map else None
        self.scales, self.max_distort = tuple(scales), max_distort
        self.fix_crop, self.more_fix_crop = fix_crop, more_fix_crop
        self.prescale, self.draft = prescale, draft

    def draw(self, width: int, height: int, rng: Rng) -> tuple[tuple[float, float, float, float], bool]:
        """The clip's random draw: crop box ``(x, y, w, h)`` in stored-frame pixels, and the flip."""
        ratio = 1.0
        w, h = width, height
        if self.prescale:
            w, h = scaled_size(width, height, self.scale_size)
            ratio = width / w
        x, y, cw, ch = draw_multiscale_crop(
            w, h, self.crop_size, rng, self.scales, self.max_distort, self.fix_crop, self.more_fix_crop
        )
        flipped = self.flip and _uniform(rng) < 0.5
        return (x * ratio, y * ratio, cw * ratio, ch * ratio), flipped

    def apply(self, frames: Sequence[Frame], rng: Rng, label: int | None = None) -> tuple[torch.Tensor, int | None]:
        width, height = _clip_size(frames)
        (x, y, cw, ch), flipped = self.draw(width, height, rng)
        s = self.crop_size
        draft = None
        if self.draft:
            # Decoding at 1/2, 1/4... is only allowed to shrink the crop down to the output size.
            draft = (math.ceil(width * s / cw), math.ceil(height * s / ch))
        integral = all(float(v).is_integer() for v in (x, y, cw, ch))
        crops = None
        for i, frame in enumerate(frames):
            img = _decode_pil(frame, i, draft)
            k = img.size[0] / width
            if k == 1 and integral:
                x0, y0 = int(x), int(y)
                arr = np.asarray(img)[y0:y0 + int(ch), x0:x0 + int(cw)]
            else:
                # A drafted (or prescaled) frame is small, so PIL's exact float box is cheap
                # here, and integer rounding of the box would shift the crop by up to k/2 pixels.
                box = (x * k, y * k, min((x + cw) * k, img.size[0]), min((y + ch) * k, img.size[1]))
                arr = np.asarray(img.resize((s, s), Image.BILINEAR, box=box))
            if flipped:
                arr = arr[:, ::-1]
            if crops is None:
                crops = np.empty((len(frames),) + arr.shape, dtype=np.uint8)
            if arr.shape != crops.shape[1:]:
                raise FrameDecodeError(i, f"decoded size {img.size} differs from the clip's first frame")
            crops[i] = arr
        clip = torch.from_numpy(crops).permute(0, 3, 1, 2)
        if clip.shape[-2:] != (s, s):
            clip = F.interpolate(clip, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        out = normalize_uint8_fused(clip, self.mean, self.std).reshape(-1, s, s)
        if label is not None and flipped and self.flip_label_map:
            label = self.flip_label_map.get(label, label)
        return out, label


class EvalTransform(ClipTransform):
    """Resize the shorter side to ``scale_size`` (PIL bilinear, full decode), then
    ``num_crops`` crops of ``crop_size``: 1 centre, 3 full-resolution (left,
    right, centre along the longer side), 5 (corners + centre) or 10 (the 5 and
    their mirror images, each followed by its mirror). Output ``[V*F*3, S, S]``
    float with ``V = num_crops``; deterministic (``rng`` unused).
    """

    def __init__(
        self,
        crop_size: int,
        scale_size: int,
        num_crops: int = 1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        if num_crops not in (1, 3, 5, 10):
            raise ValueError(f"num_crops must be 1, 3, 5 or 10, got {num_crops}")
        if scale_size < crop_size:
            raise ValueError(f"scale_size {scale_size} is smaller than crop_size {crop_size}")
        self.crop_size, self.scale_size, self.num_crops = crop_size, scale_size, num_crops
        self.num_views = num_crops
        self.mean, self.std = tuple(mean), tuple(std)

    def offsets(self, width: int, height: int) -> list[tuple[int, int, bool]]:
        """Crop views ``(x, y, mirrored)`` on the resized frame of size ``(width, height)``."""
        s = self.crop_size
        if self.num_crops == 1:
            return [center_crop_offset(width, height, s, s) + (False,)]
        if self.num_crops == 3:
            return [o + (False,) for o in full_res_offsets(width, height, s, s)]
        positions = fixed_crop_offsets(width, height, s, s, more_fix_crop=False)
        if self.num_crops == 5:
            return [o + (False,) for o in positions]
        return [o + (m,) for o in positions for m in (False, True)]

    def apply(self, frames: Sequence[Frame], rng: Rng | None = None, label: int | None = None) -> tuple[torch.Tensor, int | None]:
        _clip_size(frames)
        s = self.crop_size
        resized = []
        for i, frame in enumerate(frames):
            img = _decode_pil(frame, i)
            size = scaled_size(img.size[0], img.size[1], self.scale_size)
            if size != img.size:
                img = img.resize(size, Image.BILINEAR)
            resized.append(np.asarray(img))
        h, w = resized[0].shape[:2]
        views = self.offsets(w, h)
        out = np.empty((len(views), len(frames), s, s, 3), dtype=np.uint8)
        for v, (x, y, mirrored) in enumerate(views):
            for i, arr in enumerate(resized):
                crop = arr[y:y + s, x:x + s]
                out[v, i] = crop[:, ::-1] if mirrored else crop
        clip = torch.from_numpy(out).permute(0, 1, 4, 2, 3)
        return normalize_uint8(clip, self.mean, self.std).reshape(-1, s, s), label

    def __call__(self, frames: Sequence[Frame], rng: Rng | None = None) -> torch.Tensor:
        return self.apply(frames, rng)[0]


def default_scale_size(crop_size: int) -> int:
    """The published test-time shorter side: ``crop_size * 256 // 224`` (256 for 224)."""
    return crop_size * 256 // 224


def train_transform(
    crop_size: int,
    scale_size: int | None,
    flip: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    flip_label_map: dict[int, int] | None = None,
    **kwargs,
) -> TrainTransform:
    """The published training augmentation: ``GroupMultiScaleCrop(crop, [1, .875, .75, .66])``
    then, when ``flip``, a random horizontal flip (labels swapped by ``flip_label_map``).

    ``scale_size`` is used only with ``prescale=True`` (see :class:`TrainTransform`).
    The result maps ``(frames, rng)`` to float ``[F*3, crop, crop]``.
    """
    return TrainTransform(crop_size, scale_size, flip, mean, std, flip_label_map, **kwargs)


def eval_transform(
    crop_size: int,
    scale_size: int | None = None,
    num_crops: int = 1,
    full_res: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> EvalTransform:
    """The published test pipeline (TSM's ``test_models.py``).

    ``scale_size`` defaults to :func:`default_scale_size`. ``full_res`` crops at
    the scale size instead of the crop size (e.g. 256x256 for crop 224), so
    3 crops cover the whole frame along its longer side. The result maps
    ``(frames, rng)`` to float ``[num_crops*F*3, S, S]``.
    """
    scale = scale_size or default_scale_size(crop_size)
    crop = scale if full_res else crop_size
    return EvalTransform(crop, scale, num_crops, mean, std)
