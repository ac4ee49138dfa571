"""Draw PA (Persistence of Appearance) maps beside the frames they come from, as a PNG grid.

One row per segment: the ``m`` consecutive RGB frames that PA reads, then the
``m - 1`` PA maps (one per neighbouring pair of frames). Each map is
normalised on its own for display (its 99.5th percentile becomes full
brightness) and drawn with an inferno-like colour scale, so even the weak
maps of an untrained PA are visible: PA is a small convolution applied to the
difference of two frames, then a per-pixel norm, so it lights up where
appearance changes between frames -- the boundaries of moving things -- and
stays dark on static background.

    python tools/visualize_pa.py data/synthetic/videos/video_001200.mp4 --out pa.png
    python tools/visualize_pa.py data/synthetic/frames/video_001200 \\
        --weights runs/quickstart/checkpoints/pan_lite/ckpt.best.pth.tar --out pa_trained.png

The maps of a fresh PA, initialised as in training (``N(0, 0.001)`` weights,
seeded by ``--seed``), are always drawn (unless ``--no-untrained``); with
``--weights`` those of a trained PA or Lite checkpoint are drawn beside them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.checkpoint import CheckpointError  # noqa: E402
from ops.dataset import SampleLoadError  # noqa: E402
from ops.inference import load_checkpoint_model  # noqa: E402
from ops.modalities import DEFAULT_PA_LENGTH, IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from ops.PAN_modules import PA  # noqa: E402
from ops.runtime import setup_logging  # noqa: E402
from ops.video_reader import VideoReadError  # noqa: E402
from tools.demo import DEFAULT_IMAGE_TMPL, DemoError, decode_clip  # noqa: E402

logger = logging.getLogger("visualize_pa")

#: Anchor colours of the display scale (dark purple -> red -> orange -> pale yellow),
#: close to matplotlib's "inferno" so that the pictures read like the paper's.
_ANCHORS = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
     [250, 193, 39], [252, 255, 164]],
    dtype=np.float32,
)
#: Share of a map's pixels allowed to saturate: a few extreme pixels would otherwise dim the rest.
DISPLAY_PERCENTILE = 99.5
GAP = 4
LABEL_HEIGHT = 14
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in ``[0, 1]`` (``[H, W]``) to ``uint8 [H, W, 3]`` colours of the display scale."""
    v = np.clip(values, 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.floor(v).astype(np.int64).clip(0, len(_ANCHORS) - 2)
    frac = (v - low)[..., None]
    return np.rint(_ANCHORS[low] * (1 - frac) + _ANCHORS[low + 1] * frac).astype(np.uint8)


def normalize_for_display(pa_map: np.ndarray, percentile: float = DISPLAY_PERCENTILE) -> np.ndarray:
    """One map ``[H, W]`` scaled to ``[0, 1]``: its minimum to 0, its ``percentile`` to 1 (clipped).

    A constant map (no motion at all) becomes all zeros rather than noise blown up to full scale.
    """
    low = float(pa_map.min())
    high = float(np.percentile(pa_map, percentile))
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.zeros_like(pa_map, dtype=np.float32)
    return ((pa_map - low) / (high - low)).astype(np.float32)


def frames_to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """``uint8 [H, W, 3]`` frames -> float ``[F, 3, H, W]`` normalised as the models' input (ImageNet mean/std)."""
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def compute_pa_maps(pa: PA, frames: list[np.ndarray]) -> np.ndarray:
    """PA maps of consecutive frame groups.

    Args:
        pa: the PA module; its ``n_length`` is the group size ``m``.
        frames: ``S * m`` frames, ``uint8 [H, W, 3]``, segment after segment.

    Returns:
        float32 ``[S, m - 1, H, W]``.
    """
    with torch.inference_mode():
        return pa(frames_to_tensor(frames)).float().numpy()


@dataclass(frozen=True)
class GridLayout:
    """Geometry of the picture: ``rows`` segments of ``frames`` RGB tiles, then ``groups`` x ``maps`` PA tiles.

    Above the rows: a title line and a line naming each group of columns;
    above every tile, its label. A wider gap separates the groups.
    """

    rows: int
    frames: int
    maps: int
    tile_w: int
    tile_h: int
    groups: int = 1

    @property
    def columns(self) -> int:
        return self.frames + self.groups * self.maps

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        width = self.columns * (self.tile_w + GAP) + (self.groups + 1) * GAP
        height = 2 * LABEL_HEIGHT + self.rows * (self.tile_h + LABEL_HEIGHT + GAP) + GAP
        return width, height

    def group_of(self, column: int) -> int:
        """0 for the frames, ``g + 1`` for the columns of map group ``g``."""
        return 0 if column < self.frames else 1 + (column - self.frames) // self.maps

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """Top-left pixel of a tile."""
        x = GAP + column * (self.tile_w + GAP) + GAP * self.group_of(column)
        y = 2 * LABEL_HEIGHT + row * (self.tile_h + LABEL_HEIGHT + GAP) + LABEL_HEIGHT
        return x, y


def render_grid(frames: list[np.ndarray], groups: list[tuple[str, np.ndarray]], frame_numbers: list[int],
                scale: int, title: str) -> Image.Image:
    """The picture: per segment, its ``m`` frames (nearest-neighbour enlarged ``scale`` times), then
    the PA maps of every group (e.g. untrained and trained PA) side by side.

    Args:
        frames: ``S * m`` uint8 frames ``[H, W, 3]``.
        groups: ``(name, maps)`` with raw PA maps ``[S, m - 1, H, W]`` (normalised here, one by one).
        frame_numbers: the 1-based number of each frame in its video, for the labels.
        scale: integer enlargement of every tile.
        title: first line of the picture.
    """
    segments, num_maps, height, width = groups[0][1].shape
    m = num_maps + 1
    layout = GridLayout(segments, m, num_maps, width * scale, height * scale, len(groups))
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 1), title, fill=TEXT)
    for g, name in enumerate(["frames"] + [name for name, _ in groups]):
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
    return canvas


def save_png_atomic(image: Image.Image, path: str) -> None:
    """Write ``image`` as PNG to ``path`` through a temporary file, so no half-written picture is left."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fresh_pa(data_length: int, seed: int) -> PA:
    """A PA initialised as in training (``N(0, 0.001)`` weights), reproducibly from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PA(data_length).eval()


def trained_pa(weights: str) -> tuple[PA, str]:
    """The PA of a PA or Lite checkpoint and a name for it; an RGB checkpoint is refused."""
    model, resolved, _ = load_checkpoint_model(weights)
    if not hasattr(model, "PA"):
        raise DemoError(f"checkpoint {weights} is a {resolved.config['modality']} model: it has no PA to draw")
    return model.PA.eval(), f"trained PA: {os.path.basename(weights)} ({resolved.config['modality']})"


def visualize(
    path: str,
    out: str,
    weights: str | None = None,
    segments: int = 4,
    data_length: int = DEFAULT_PA_LENGTH,
    seed: int = 0,
    scale: int | None = None,
    image_tmpl: str = DEFAULT_IMAGE_TMPL,
    untrained: bool = True,
) -> Image.Image:
    """Write the PNG grid of ``segments`` segments of the video or frame folder ``path`` to ``out``.

    The maps of a fresh PA (``untrained``) and of the checkpoint's PA (``weights``) are drawn side
    by side; at least one of them is needed. ``scale`` (default: enough to make tiles at least 96
    pixels high) enlarges every tile. Returns the picture written.
    """
    pas: list[tuple[str, PA]] = []
    if weights is not None:
        pa, name = trained_pa(weights)
        pas.append((name, pa))
        data_length = pa.n_length
    if untrained:
        pas.insert(0, (f"untrained PA (N(0, 0.001), seed {seed})", fresh_pa(data_length, seed)))
    if not pas:
        raise DemoError("nothing to draw: give --weights or keep --untrained")
    clip = decode_clip(path, segments, data_length, 1, image_tmpl)
    groups = [(name, compute_pa_maps(pa, clip.frames)) for name, pa in pas]
    height = clip.frames[0].shape[0]
    scale = scale or max(1, -(-96 // height))
    title = f"{path}: {segments} segments of {data_length} frames; each PA map scaled to its own range"
    image = render_grid(clip.frames, groups, [int(n) for n in clip.numbers], scale, title)
    save_png_atomic(image, out)
    return image


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write a PNG grid of video frames and their PA maps.")
    parser.add_argument("input", help="a video file (any format PyAV reads) or a folder of frames")
    parser.add_argument("--out", required=True, help="PNG file to write (its folder is created)")
    parser.add_argument("--weights", default=None,
                        help="PA or Lite checkpoint whose trained PA to draw (default: none, only a fresh PA)")
    parser.add_argument("--untrained", action=argparse.BooleanOptionalAction, default=True,
                        help="also draw the maps of a fresh, untrained PA (default: on)")
    parser.add_argument("--segments", type=int, default=4, help="rows of the grid, evenly spread (default: 4)")
    parser.add_argument("--data_length", type=int, default=DEFAULT_PA_LENGTH,
                        help="frames per segment m of a fresh PA (default: 4, as in the paper); "
                             "a checkpoint's own value wins")
    parser.add_argument("--seed", type=int, default=0, help="seed of a fresh PA's weights (default: 0)")
    parser.add_argument("--scale", type=int, default=None,
                        help="integer enlargement of the tiles (default: tiles at least 96 pixels high)")
    parser.add_argument("--image_tmpl", default=DEFAULT_IMAGE_TMPL,
                        help="frame file names in a frame folder (default: img_{:05d}.jpg)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Write the picture; returns the exit status (2 for unusable input, with the reason logged)."""
    if args.segments < 1 or args.data_length < 2 or (args.scale is not None and args.scale < 1):
        logger.error("--segments and --scale must be >= 1 and --data_length >= 2")
        return 2
    try:
        image = visualize(args.input, args.out, args.weights, args.segments, args.data_length, args.seed,
                          args.scale, args.image_tmpl, args.untrained)
    except (DemoError, CheckpointError, FileNotFoundError, SampleLoadError, VideoReadError, ValueError) as e:
        logger.error("%s", e)
        return 2
    logger.info("wrote %s (%dx%d)", args.out, *image.size)
    return 0


if __name__ == "__main__":
    setup_logging(True)
    sys.exit(main(get_args_parser().parse_args()))
