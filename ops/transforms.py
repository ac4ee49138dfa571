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

Two paths, both decoding a clip's JPEG frames into one ``uint8 [F, H, W, 3]``
array (:func:`decode_clip`: libjpeg-turbo through ``simplejpeg`` when it is
installed, else PIL; the same exact decode -- accurate integer IDCT, fancy
upsampling -- so the same pixels as ``Image.open(path).convert('RGB')``):

* **evaluation** (:func:`eval_transform`) reproduces the published pipeline to
  the pixel: full JPEG decode, PIL bilinear resize of the shorter side
  (torchvision's size rule), centre / 3 full-resolution / 5 / 10 crops taken
  from the resized image, ``x / 255`` then ``(x - mean) / std`` in float32
  (one frame at a time, so the four passes stay in cache).
* **training** (:func:`train_transform`) draws the published augmentation
  (multi-scale crop with scales 1, .875, .75, .66 of the shorter side, at most
  one step of aspect distortion, 13 fixed positions; horizontal flip with
  probability 1/2; one draw per clip) and crops and resizes all frames of the
  clip in one batched ``uint8`` call of torch's antialiased bilinear resize
  (PIL's algorithm, vectorised), flips the ``uint8`` result and normalises in
  one fused multiply-add per frame. When the crop is at least twice the output
  size, frames are decoded in JPEG draft mode instead (at 1/2, 1/4 or 1/8) and
  each small frame is resized with PIL's exact float box. Pixels differ from
  the published path by interpolation rounding (at most a grey level or two)
  and float rounding of the normalisation (~1e-6), which changes the
  augmentation's pixels, not its distribution."""

from __future__ import annotations

import io
import logging
import math
import random
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ops.errors import PanError
from ops.frame_sources import Frame
from ops.jpeg_frames import EncodedJpeg
# Optional (None when not installed): libjpeg-turbo called straight into a numpy buffer, ~1.6x faster than
# PIL's decode + np.asarray on 340x256 frames, same pixels.
from ops.jpeg_frames import simplejpeg
from ops.modalities import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

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


def _frames_of(clip: torch.Tensor) -> torch.Tensor:
    """``uint8 [..., 3, H, W]`` (any strides) -> ``[N, 3, H, W]``, a view when the strides allow."""
    if clip.dim() < 3 or clip.shape[-3] != 3:
        raise ValueError(f"expected a tensor [..., 3, H, W], got shape {tuple(clip.shape)}")
    return clip.reshape(-1, *clip.shape[-3:])


def planar(frames: np.ndarray, mirror: bool = False) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` (any strides) -> ``uint8 [N, 3, H, W]`` contiguous, mirrored left-right
    when ``mirror``. numpy's transposing copy of bytes is ~3x faster than torch's (measured:
    2.6 vs 10 ms for a 32-frame 224 clip), and it takes the mirror in the same pass."""
    view = frames.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(view[..., ::-1] if mirror else view))


def normalize_uint8(
    clip: torch.Tensor, mean: Sequence[float], std: Sequence[float], out: torch.Tensor | None = None
) -> torch.Tensor:
    """``uint8 [..., 3, H, W]`` (any strides) -> float32 ``(x / 255 - mean) / std``, same shape, contiguous
    (written into ``out`` when given: a contiguous float32 tensor of that shape).

    The operations and their order are those of the published
    ToTorchFormatTensor + GroupNormalize, so results are bit-identical. They
    run one frame at a time: a ``[3, 224, 224]`` float frame (600 KB) stays in
    cache through the four passes, which over a whole clip would each go to memory.
    """
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    if out is None:
        out = torch.empty(clip.shape, dtype=torch.float32)
    elif out.shape != clip.shape or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor {tuple(clip.shape)}, got "
                         f"{out.dtype} {tuple(out.shape)}")
    for o, c in zip(_frames_of(out), _frames_of(clip)):
        o.copy_(c)
        o.div_(255).sub_(m).div_(s)
    return out


def normalize_uint8_fused(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Same as :func:`normalize_uint8` up to float rounding (1e-6), as ``x * (1 / (255 std)) - mean / std``:
    a multiply and an add instead of three divisions and a subtraction, frame by frame
    (in cache). For the training path only."""
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    scale = 1.0 / (255.0 * s)
    shift = -torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) / s
    out = torch.empty(clip.shape, dtype=torch.float32)
    for o, c in zip(_frames_of(out), _frames_of(clip)):
        o.copy_(c)
        o.mul_(scale).add_(shift)
    return out


# ------------------------------------------------------------------ decoding


def _frame_size(frame: Frame) -> tuple[int, int]:
    if isinstance(frame, (Image.Image, EncodedJpeg)):
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
        if isinstance(frame, EncodedJpeg):
            frame = frame.pil()
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


_warned_no_simplejpeg = False


def _jpeg_bytes(frame: Frame) -> bytes | None:
    """The encoded bytes of a not yet decoded RGB JPEG image, or None when the frame is anything else.

    Grey, CMYK and other frames, and images PIL has already loaded (their file may be
    closed), go through PIL, which converts them to RGB as the published ``convert('RGB')``.
    """
    if isinstance(frame, EncodedJpeg):
        return frame.data
    if not isinstance(frame, Image.Image) or frame.format != "JPEG" or frame.mode != "RGB":
        return None
    fp = getattr(frame, "fp", None)
    if fp is None or getattr(fp, "closed", False):
        return None
    if isinstance(fp, io.BytesIO):  # how the frame sources open frames
        return fp.getvalue()
    position = fp.tell()
    fp.seek(0)  # a JPEG file's tile starts at offset 0
    data = fp.read()
    fp.seek(position)
    return data


def _use_simplejpeg() -> bool:
    global _warned_no_simplejpeg
    if simplejpeg is None and not _warned_no_simplejpeg:
        _warned_no_simplejpeg = True
        logger.warning("simplejpeg is not installed: JPEG frames are decoded by PIL, the same pixels "
                       "~1.6x slower (pip install simplejpeg)")
    return simplejpeg is not None


def _decode_into(frame: Frame, index: int, dest: np.ndarray) -> None:
    """Decode ``frame`` exactly (as ``convert('RGB')``) into ``dest``, ``uint8 [H, W, 3]`` C-contiguous."""
    if isinstance(frame, np.ndarray):
        dest[...] = frame
        return
    data = _jpeg_bytes(frame)
    if data is not None and _use_simplejpeg():
        try:
            # Accurate IDCT and fancy upsampling (simplejpeg's defaults) are also PIL's: same pixels.
            arr = simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=dest)
        except ValueError as e:  # simplejpeg reports corrupt or truncated data (strict) as ValueError
            raise FrameDecodeError(index, f"cannot decode image: {e}") from None
        if arr.shape != dest.shape:
            raise FrameDecodeError(index, f"decoded size {arr.shape[1]}x{arr.shape[0]} differs from "
                                          f"the header's {dest.shape[1]}x{dest.shape[0]}")
        return
    arr = np.asarray(_decode_pil(frame, index))
    if arr.shape != dest.shape:
        raise FrameDecodeError(index, f"decoded size {arr.shape[1]}x{arr.shape[0]} differs from "
                                      f"the clip's {dest.shape[1]}x{dest.shape[0]}")
    dest[...] = arr


def decode_clip(frames: Sequence[Frame]) -> np.ndarray:
    """All frames of a clip, decoded exactly (the pixels of the published ``Image.open(p).convert('RGB')``).

    ``frames``: ``F`` lazily opened PIL images or ``uint8 [H, W, 3]`` arrays, all of one size;
    a frame object given more than once (a video's last frame repeated) is decoded once.

    Returns: ``uint8 [F, H, W, 3]``, C-contiguous. Raises :class:`FrameDecodeError` naming the frame.
    """
    width, height = _clip_size(frames)
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    decoded: dict[int, int] = {}
    for i, frame in enumerate(frames):
        first = decoded.setdefault(id(frame), i)
        if first != i:
            out[i] = out[first]
        else:
            _decode_into(frame, i, out[i])
    return out


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
        reverse_label_map: dict[int, int] | None = None,
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
        self.reverse_label_map = dict(reverse_label_map) if reverse_label_map else None

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
        box, flipped = self.draw(width, height, rng)
        # Drawn only when asked for, so that the crops of every other run stay those of earlier versions.
        if self.reverse_label_map is not None and _uniform(rng) < 0.5:
            frames = frames[::-1]  # the whole clip backwards: segments and the frames within them
            if label is not None:
                label = self.reverse_label_map.get(label, label)
        s = self.crop_size
        integral = all(float(v).is_integer() for v in box)
        draft = None
        if self.draft:
            # Decoding at 1/2, 1/4... is only allowed to shrink the crop down to the output size.
            draft = (math.ceil(width * s / box[2]), math.ceil(height * s / box[3]))
        if integral and (draft is None or min(width // draft[0], height // draft[1]) < 2):
            crops = self._crop_resize_batched(frames, tuple(int(v) for v in box))
        else:
            crops = self._crop_resize_each(frames, box, draft)
        out = normalize_uint8_fused(planar(crops, mirror=flipped), self.mean, self.std).reshape(-1, s, s)
        if label is not None and flipped and self.flip_label_map:
            label = self.flip_label_map.get(label, label)
        return out, label

    def _crop_resize_batched(self, frames: Sequence[Frame], box: tuple[int, int, int, int]) -> np.ndarray:
        """Exact decode of the whole clip, then crop ``box = (x, y, w, h)`` and resize all
        frames in one call. Returns ``uint8 [F, S, S, 3]`` (a view when no resize is needed)."""
        x, y, w, h = box
        s = self.crop_size
        crops = decode_clip(frames)[:, y:y + h, x:x + w]
        if (w, h) == (s, s):
            return crops
        # uint8 channels-last input takes torch's vectorised port of PIL's bilinear resize
        # (antialiased when shrinking, as PIL's): results within a grey level of PIL's.
        nchw = torch.from_numpy(crops).permute(0, 3, 1, 2)
        resized = F.interpolate(nchw, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return resized.permute(0, 2, 3, 1).numpy()  # the output keeps the input's channels-last layout

    def _crop_resize_each(
        self, frames: Sequence[Frame], box: tuple[float, float, float, float], draft: tuple[int, int] | None
    ) -> np.ndarray:
        """Frame by frame with PIL: draft decode (or a prescaled, fractional ``box``), then
        PIL's resize with the exact float box. Returns ``uint8 [F, S, S, 3]``."""
        x, y, cw, ch = box
        width, _ = _frame_size(frames[0])
        s = self.crop_size
        crops = np.empty((len(frames), s, s, 3), dtype=np.uint8)
        first_size = None
        for i, frame in enumerate(frames):
            img = _decode_pil(frame, i, draft)
            first_size = first_size or img.size
            if img.size != first_size:
                raise FrameDecodeError(i, f"decoded size {img.size} differs from the clip's first frame")
            k = img.size[0] / width
            # A drafted frame is small, so PIL's exact float box is cheap here, and integer
            # rounding of the box would shift the crop by up to k/2 pixels.
            crop_box = (x * k, y * k, min((x + cw) * k, img.size[0]), min((y + ch) * k, img.size[1]))
            crops[i] = np.asarray(img.resize((s, s), Image.BILINEAR, box=crop_box))
        return crops


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
        s = self.crop_size
        clip = decode_clip(frames)
        num_frames, height, width = clip.shape[:3]
        size = scaled_size(width, height, self.scale_size)
        if size != (width, height):
            # PIL's resize of the decoded image, frame by frame: the published pixels.
            clip = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in clip])
        views = self.offsets(size[0], size[1])
        out = torch.empty((len(views), num_frames, 3, s, s), dtype=torch.float32)
        for v, (x, y, mirrored) in enumerate(views):
            normalize_uint8(planar(clip[:, y:y + s, x:x + s], mirror=mirrored), self.mean, self.std, out=out[v])
        return out.reshape(-1, s, s), label

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
    then, when ``flip``, a random horizontal flip (labels swapped by ``flip_label_map``);
    with ``reverse_label_map=`` (a keyword), also the clip played backwards half of the
    time, relabelled by the map (not published: ``main.py --reverse_aug``).

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
