"""Pictures of what a model sees: PA maps beside their frames, and Grad-CAM overlays.

Used by ``tools/visualize_pa.py`` (a PNG of one video) and by ``main.py``'s
validation (the same picture for a few validation clips, into TensorBoard).

* PA maps: PA is a small convolution applied to the difference of two frames,
  then a per-pixel norm, so it lights up where appearance changes between
  frames. Each map is normalised on its own for display (its 99.5th percentile
  becomes full brightness) and drawn with matplotlib's ``inferno`` scale.
* Grad-CAM (Selvaraju et al., 2017): the activations ``A [N*T, K, h, w]`` of
  the backbone's last stage, weighted per channel by the spatial mean of the
  class score's gradient, summed over channels and rectified: one ``[h, w]``
  map per segment, upsampled to the frame and scaled by the clip's maximum
  (so segments compare), drawn over the segment's first frame with ``jet``.

Shapes: frames are ``uint8 [H, W, 3]``; a clip is ``S * m`` frames, segment
after segment (``m`` frames per segment).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from ops.files import atomic_write
from ops.modalities import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

#: Share of a map's pixels allowed to saturate: a few extreme pixels would otherwise dim the rest.
DISPLAY_PERCENTILE = 99.5
#: Weight of the Grad-CAM colours over the frame.
CAM_ALPHA = 0.5
GAP = 4
LABEL_HEIGHT = 14
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def require_matplotlib(feature: str):
    """``matplotlib`` (imported on first use), or an ImportError naming it and ``feature``."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"{feature} needs matplotlib, which is not installed: pip install matplotlib "
                          f"(it is in requirements.txt)") from None
    return matplotlib


@functools.lru_cache(maxsize=8)
def _palette(name: str) -> np.ndarray:
    """``uint8 [256, 3]``: the colours of matplotlib colour map ``name``."""
    matplotlib = require_matplotlib("the colour scale of the pictures")
    table = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.rint(table * 255).astype(np.uint8)


def colorize(values: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Map values in ``[0, 1]`` (``[H, W]``) to ``uint8 [H, W, 3]`` colours of ``cmap`` (default inferno)."""
    index = np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.int64)
    return _palette(cmap)[index]


def normalize_for_display(pa_map: np.ndarray, percentile: float = DISPLAY_PERCENTILE) -> np.ndarray:
    """One map ``[H, W]`` scaled to ``[0, 1]``: its minimum to 0, its ``percentile`` to 1 (clipped).

    A constant map (no motion at all) becomes all zeros rather than noise blown up to full scale.
    """
    low = float(pa_map.min())
    high = float(np.percentile(pa_map, percentile))
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.zeros_like(pa_map, dtype=np.float32)
    return ((pa_map - low) / (high - low)).astype(np.float32)


def frames_to_tensor(frames: Sequence[np.ndarray], mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``uint8 [H, W, 3]`` frames -> float ``[F, 3, H, W]`` normalised as the models' input."""
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def tensor_to_frames(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> list[np.ndarray]:
    """A normalised clip ``[F*3, H, W]`` (a dataset sample) -> ``F`` uint8 frames ``[H, W, 3]``."""
    frames = x.detach().float().cpu().reshape(-1, 3, *x.shape[-2:])
    frames = frames * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return list(pixels)


def compute_pa_maps(pa: nn.Module, frames: Sequence[np.ndarray]) -> np.ndarray:
    """PA maps of consecutive frame groups.

    Args:
        pa: the PA module; its ``n_length`` is the group size ``m``.
        frames: ``S * m`` frames, ``uint8 [H, W, 3]``, segment after segment.

    Returns:
        float32 ``[S, m - 1, H, W]``.
    """
    with torch.inference_mode():
        return pa(frames_to_tensor(frames)).float().numpy()


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class GridLayout:
    """Geometry of the picture: ``rows`` segments of ``frames`` RGB tiles, then ``groups`` x ``maps`` PA
    tiles, then ``cams`` Grad-CAM tiles.

    Above the rows: a title line and a line naming each group of columns;
    above every tile, its label. A wider gap separates the groups.
    """

    rows: int
    frames: int
    maps: int
    tile_w: int
    tile_h: int
    groups: int = 1
    cams: int = 0

    @property
    def columns(self) -> int:
        return self.frames + self.groups * self.maps + self.cams

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        width = self.columns * (self.tile_w + GAP) + (self.groups + 1 + (1 if self.cams else 0)) * GAP
        height = 2 * LABEL_HEIGHT + self.rows * (self.tile_h + LABEL_HEIGHT + GAP) + GAP
        return width, height

    def group_of(self, column: int) -> int:
        """0 for the frames, ``g + 1`` for the columns of map group ``g``, ``groups + 1`` for Grad-CAM."""
        if column < self.frames:
            return 0
        if column < self.frames + self.groups * self.maps:
            return 1 + (column - self.frames) // max(self.maps, 1)
        return self.groups + 1

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """Top-left pixel of a tile."""
        x = GAP + column * (self.tile_w + GAP) + GAP * self.group_of(column)
        y = 2 * LABEL_HEIGHT + row * (self.tile_h + LABEL_HEIGHT + GAP) + LABEL_HEIGHT
        return x, y


def render_grid(frames: Sequence[np.ndarray], groups: Sequence[tuple[str, np.ndarray]], frame_numbers: Sequence[int],
                scale: int, title: str, cams: tuple[str, np.ndarray] | None = None) -> Image.Image:
    """The picture: per segment, its ``m`` frames (nearest-neighbour enlarged ``scale`` times), then
    the PA maps of every group (e.g. untrained and trained PA) side by side, then the Grad-CAM overlay.

    Args:
        frames: ``S * m`` uint8 frames ``[H, W, 3]``.
        groups: ``(name, maps)`` with raw PA maps ``[S, m - 1, H, W]`` (normalised here, one by one).
        frame_numbers: the 1-based number of each frame in its video, for the labels.
        scale: integer enlargement of every tile.
        title: first line of the picture.
        cams: ``(name, overlays)`` with ``uint8 [S, H, W, 3]`` Grad-CAM overlays (:func:`overlay_cams`).
    """
    segments, num_maps, height, width = groups[0][1].shape
    m = num_maps + 1
    layout = GridLayout(segments, m, num_maps, width * scale, height * scale, len(groups), 1 if cams else 0)
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 1), title, fill=TEXT)
    names = ["frames"] + [name for name, _ in groups] + ([cams[0]] if cams else [])
    for g, name in enumerate(names):
        x, _ = layout.origin(0, 0 if g == 0 else m + (g - 1) * num_maps)
        draw.text((x, LABEL_HEIGHT + 1), name, fill=TEXT)

    def paste(tile: np.ndarray, row: int, column: int, label: str) -> None:
        image = Image.fromarray(tile).resize((layout.tile_w, layout.tile_h), Image.NEAREST)
        x, y = layout.origin(row, column)
        canvas.paste(image, (x, y))
        draw.text((x, y - LABEL_HEIGHT + 2), label, fill=TEXT)

    for s in range(segments):
        numbers = frame_numbers[s * m:(s + 1) * m]
        for j in range(m):
            paste(frames[s * m + j], s, j, f"frame {numbers[j]}")
        for g, (_, maps) in enumerate(groups):
            for j in range(num_maps):
                tile = colorize(normalize_for_display(maps[s, j]))
                paste(tile, s, m + g * num_maps + j, f"PA {numbers[j]}-{numbers[j + 1]}")
        if cams:
            paste(cams[1][s], s, layout.columns - 1, f"frame {numbers[0]}")
    return canvas


def save_png_atomic(image: Image.Image, path: str) -> None:
    """Write ``image`` as PNG to ``path`` atomically (:func:`ops.files.atomic_write`), creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: image.save(f, format="PNG"))


# --------------------------------------------------------------------------- Grad-CAM


def last_stage(model: nn.Module) -> nn.Module:
    """The backbone's last convolutional stage of a :class:`ops.models.PAN` (``layer4`` of a ResNet)."""
    base = getattr(model, "base_model", model)
    for name in ("layer4", "features", "Mixed_7c"):
        stage = getattr(base, name, None)
        if stage is not None:
            return stage[-1] if name == "features" else stage
    raise ValueError(f"Grad-CAM: no last stage (layer4) found in {type(base).__name__}")


@dataclass
class GradCam:
    """Grad-CAM of one clip: ``maps [T, H, W]`` in ``[0, 1]`` (one per segment, scaled by the clip's
    maximum), the class it explains, the predicted class and the class scores ``[C]``."""

    maps: np.ndarray
    target: int
    predicted: int
    scores: np.ndarray


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | None = None) -> GradCam:
    """Grad-CAM on the last backbone stage for one clip ``x [T*m*3, H, W]`` (normalised as the model's input).

    ``target`` is the class to explain (default: the predicted one). The model
    is put in eval mode; its parameters get no gradient.
    """
    model.eval()
    stage = last_stage(model)
    captured: list[torch.Tensor] = []
    handle = stage.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            scores = model(x.unsqueeze(0).float())[0]
            predicted = int(scores.argmax())
            target = predicted if target is None else int(target)
            if not 0 <= target < scores.shape[0]:
                raise ValueError(f"Grad-CAM: class {target} is not among the model's {scores.shape[0]} classes")
            activation = captured[-1]
            (gradient,) = torch.autograd.grad(scores[target], activation)
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # [N*T, K, 1, 1]
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True)).detach()  # [N*T, 1, h, w]
    segments = getattr(model, "num_segments", cam.shape[0])
    if cam.shape[0] < segments:  # temporal pooling halves the segments in the later stages
        cam = cam.repeat_interleave(-(-segments // cam.shape[0]), dim=0)[:segments]
    cam = torch.nn.functional.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    cam = cam[:, 0].numpy()
    peak = float(cam.max())
    maps = (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)
    return GradCam(maps, target, predicted, scores.detach().float().numpy())


def overlay_cams(frames: Sequence[np.ndarray], maps: np.ndarray, alpha: float = CAM_ALPHA) -> np.ndarray:
    """``uint8 [T, H, W, 3]``: each frame blended with its map ``[T, H, W]`` drawn in ``jet``."""
    out = []
    for frame, cam in zip(frames, maps):
        colours = colorize(cam, "jet").astype(np.float32)
        out.append(np.rint(frame.astype(np.float32) * (1 - alpha) + colours * alpha).astype(np.uint8))
    return np.stack(out)


# --------------------------------------------------------------------------- validation clips


def validation_pa_picture(model: nn.Module, x: torch.Tensor, title: str, max_rows: int = 4,
                          scale: int | None = None) -> Image.Image | None:
    """The PA picture of one validation sample ``x [T*m*3, H, W]`` for a PA or Lite model (None for RGB).

    The maps are the model's own PA applied to the clip; at most ``max_rows``
    segments, evenly spread, are drawn. Frames are labelled by their position
    in the sampled clip.
    """
    pa = getattr(model, "PA", None)
    if pa is None:
        return None
    m = pa.n_length
    mean, std = getattr(model, "input_mean", IMAGENET_MEAN), getattr(model, "input_std", IMAGENET_STD)
    frames = tensor_to_frames(x, mean, std)
    segments = len(frames) // m
    count = min(max_rows, segments)
    rows = sorted({round(i * (segments - 1) / max(count - 1, 1)) for i in range(count)})
    with torch.inference_mode():
        was_training = pa.training
        pa.eval()
        device = next(pa.parameters()).device
        clip = x.detach().float().to(device).reshape(segments, m * 3, *x.shape[-2:])
        maps = pa(clip).float().cpu().numpy()
        pa.train(was_training)
    chosen = [f for r in rows for f in frames[r * m:(r + 1) * m]]
    numbers = [r * m + j + 1 for r in rows for j in range(m)]
    height = chosen[0].shape[0]
    return render_grid(chosen, [("PA of the model", maps[rows])], numbers, scale or max(1, -(-96 // height)), title)
