"""Temporal Shift Module (TSM) and temporal pooling for 2D backbones.

The shift moves a fraction of the channels one segment along time, so a 2D
network exchanges information between neighbouring segments at no extra cost.
The direction is that of the released weights: with ``fold = C // shift_div``,
segment ``t`` takes channels ``[0, fold)`` from segment ``t + 1`` and channels
``[fold, 2 fold)`` from segment ``t - 1``; zeros enter at the clip's ends.

The ``online`` mode (:data:`SHIFT_MODES`) is the one-way shift for models meant
to stream: only channels ``[fold, 2 fold)`` move, from segment ``t - 1`` (the
same slot as the two-way shift's backward part), and channels ``[0, fold)``
stay in place. Segment ``t`` then depends on segments ``<= t`` only, so a
stream can run it one segment at a time (:mod:`ops.streaming`).

Everything is written with ``cat``/``pad`` (no in-place slice assignment), so
the shift traces and exports.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

SHIFT_PLACES = ("block", "blockres")
#: ``bidirectional``: the published two-way shift; ``online``: one-way, from the previous segment only.
SHIFT_MODES = ("bidirectional", "online")


def check_shift_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`SHIFT_MODES`, else ``ValueError``."""
    if mode not in SHIFT_MODES:
        raise ValueError(f"unknown shift mode {mode!r}; choose one of {', '.join(SHIFT_MODES)}")
    return mode


def temporal_shift(x: torch.Tensor, n_segment: int, fold_div: int = 8, mode: str = "bidirectional") -> torch.Tensor:
    """Shift channels along time.

    Args:
        x: ``[N*T, C, H, W]`` with ``T = n_segment``.
        n_segment: segments per clip.
        fold_div: a ``1 / fold_div`` share of the channels moves each way.
        mode: ``bidirectional`` (published) or ``online`` (from ``t - 1`` only).

    Returns:
        ``[N*T, C, H, W]``.
    """
    nt, channels, height, width = x.shape
    clips = x.reshape(nt // n_segment, n_segment, channels, height, width)
    fold = channels // fold_div
    # F.pad pads trailing dimensions first: (W, W, H, H, C, C, T_before, T_after).
    from_prev = F.pad(clips[:, :-1, fold : 2 * fold], (0, 0, 0, 0, 0, 0, 1, 0))
    if mode == "online":
        kept = clips[:, :, :fold]
    else:
        kept = F.pad(clips[:, 1:, :fold], (0, 0, 0, 0, 0, 0, 0, 1))  # from the next segment
    shifted = torch.cat((kept, from_prev, clips[:, :, 2 * fold :]), dim=2)
    return shifted.reshape(nt, channels, height, width)


class TemporalShift(nn.Module):
    """Shift the input along time, then apply ``net`` (kept as ``self.net``
    so that the wrapped conv's weights are named ``...conv1.net.weight``, as released).
    """

    def __init__(self, net: nn.Module, n_segment: int = 8, n_div: int = 8, mode: str = "bidirectional") -> None:
        super().__init__()
        self.net = net
        self.n_segment = n_segment
        self.fold_div = n_div
        self.mode = check_shift_mode(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_shift(x, self.n_segment, self.fold_div, self.mode))

    def extra_repr(self) -> str:
        mode = "" if self.mode == "bidirectional" else f", mode={self.mode}"
        return f"n_segment={self.n_segment}, fold_div={self.fold_div}{mode}"


@contextmanager
def clips_as_one_stream(model: nn.Module, clips: int) -> Iterator[None]:
    """Within the block, ``model``'s one-way shifts treat a batch of ``clips`` clips as one stream.

    Each :class:`TemporalShift` sees ``clips * T`` segments instead of ``T``:
    the first segment of clip ``k`` takes its shifted channels from the last
    segment of clip ``k - 1`` (and so, block by block, from further back), as
    a stream's window carries the previous scene in its shift buffers
    (:mod:`ops.streaming`). Only clip 0 starts from an empty history, as
    a stream does. Nothing else changes: PA works within a segment and the
    head pools each clip's own ``T`` features, so the output is still
    ``[clips, num_class]``, one prediction per clip.

    Raises:
        ValueError: a shift of ``model`` is two-way (it would take the next clip's segments: the future).
    """
    shifts = [m for m in model.modules() if isinstance(m, TemporalShift)]
    two_way = [m for m in shifts if m.mode != "online"]
    if two_way:
        raise ValueError("training with history needs a one-way shift (shift_mode='online'); this model's shifts "
                         "are two-way and would take segments of the next clip")
    saved = [m.n_segment for m in shifts]
    try:
        for m in shifts:
            m.n_segment *= clips
        yield
    finally:
        for m, n_segment in zip(shifts, saved):
            m.n_segment = n_segment


def temporal_pool(x: torch.Tensor, n_segment: int) -> torch.Tensor:
    """Max-pool over time with kernel 3, stride 2, padding 1.

    Args:
        x: ``[N*T, C, H, W]`` with ``T = n_segment``.

    Returns:
        ``[N*ceil(T/2), C, H, W]``.
    """
    nt, channels, height, width = x.shape
    clips = x.reshape(nt // n_segment, n_segment, channels, height, width).transpose(1, 2)
    pooled = F.max_pool3d(clips, kernel_size=(3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))
    return pooled.transpose(1, 2).reshape(-1, channels, height, width)


class TemporalPool(nn.Module):
    """Temporal max pooling in front of ``net`` (kept as ``self.net``)."""

    def __init__(self, net: nn.Module, n_segment: int) -> None:
        super().__init__()
        self.net = net
        self.n_segment = n_segment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_pool(x, self.n_segment))


def residual_stages(net: nn.Module) -> list[nn.Sequential]:
    """The four residual stages of a torchvision ResNet, in order."""
    return [net.layer1, net.layer2, net.layer3, net.layer4]


def insert_temporal_shift(
    net: nn.Module,
    n_segment: int,
    n_div: int = 8,
    place: str = "blockres",
    temporal_pool: bool = False,
    mode: str = "bidirectional",
) -> None:
    """Insert temporal shifts into a torchvision ResNet, in place.

    ``blockres`` shifts inside each residual branch, in front of the block's
    ``conv1``; for deep networks (layer3 with 23 or more blocks: ResNet-101/152)
    only every other block (0, 2, 4, ...) of each stage is shifted, as in the
    released models. ``block`` shifts the input of every whole block.

    With ``temporal_pool`` the stages after layer1 see half the segments.
    ``mode``: one of :data:`SHIFT_MODES`.
    """
    if place not in SHIFT_PLACES:
        raise ValueError(f"unknown shift place {place!r}; choose one of {', '.join(SHIFT_PLACES)}")
    stages = residual_stages(net)
    segments = [n_segment] + [n_segment // 2 if temporal_pool else n_segment] * 3
    every = 2 if len(net.layer3) >= 23 else 1
    for stage, stage_segments in zip(stages, segments):
        for index, block in enumerate(stage):
            if place == "blockres":
                if index % every == 0:
                    block.conv1 = TemporalShift(block.conv1, stage_segments, n_div, mode)
            else:
                stage[index] = TemporalShift(block, stage_segments, n_div, mode)


def insert_temporal_pool(net: nn.Module, n_segment: int) -> None:
    """Halve the segments in front of a torchvision ResNet's layer2, in place."""
    net.layer2 = TemporalPool(net.layer2, n_segment)
