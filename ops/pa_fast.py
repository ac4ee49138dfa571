"""The fast PA path: same numbers as :func:`ops.PAN_modules.pa_maps`, less time and memory traffic.

What makes it fast (each step measured with ``tools/bench_pa.py``, figures in
``docs/BENCHMARKS.md``):

* the convolution runs on the ``m - 1`` frame differences instead of the ``m``
  frames (it is linear; its bias cancels in the difference);
* the differences are written straight into a channels-last buffer, the layout
  in which oneDNN (CPU) and cuDNN (GPU) run a 3-channel 7x7 convolution fastest,
  and in which the 8 feature channels of a pixel are adjacent, so the norm is a
  contiguous reduction over the last dimension instead of a strided one;
* the ``+ eps`` of the published pairwise distance is the convolution's bias
  (a bias of ``eps`` on every channel adds ``eps`` to the feature difference),
  which saves one full pass over the features;
* a custom backward (:class:`_PAMaps`) turns the gradient of the norm into the
  gradient of the features with one multiply, then asks for exactly the
  convolution gradients that are needed (the weight's, and the frames' only
  when the frames require a gradient).

* without autograd (inference), on the CPU, the groups are processed in chunks
  whose features fit in the last-level cache (:data:`CPU_CHUNK_BYTES`): the
  norm then reads features the convolution has just written instead of
  fetching them back from memory. On an AMD EPYC with 32 MiB of L3 this made
  the forward at 224x224 up to 1.4x faster, and never slower, in our runs
  (``docs/BENCHMARKS.md``); on a GPU one launch over the whole batch is
  faster, so there is one chunk there.

Everything is plain tensor operations, so it runs on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

#: Feature bytes per chunk on the CPU: a quarter of a 32 MiB L3, so that the features,
#: the differences and the maps of a chunk stay in cache together. One group of 4
#: frames at 224x224 (4.6 MiB of features) is then a chunk of its own.
CPU_CHUNK_BYTES = 8 * 2**20


def groups_per_chunk(groups: int, n_length: int, height: int, width: int, channels: int,
                     element_size: int, device: torch.device) -> int:
    """How many groups of ``n_length`` frames one chunk of the fast path takes.

    All of them off the CPU; on the CPU as many as keep a chunk's
    ``(n_length - 1) * height * width * channels`` features within
    :data:`CPU_CHUNK_BYTES` (at least one).
    """
    if device.type != "cpu":
        return max(groups, 1)
    per_group = (n_length - 1) * height * width * channels * element_size
    return max(1, min(groups, CPU_CHUNK_BYTES // max(per_group, 1)))


def frame_differences(frames: torch.Tensor, n_length: int) -> torch.Tensor:
    """Differences of neighbouring frames within each group, channels-last.

    Args:
        frames: ``[G * n_length, 3, H, W]``.
        n_length: frames per group ``m``.

    Returns:
        ``[G * (m - 1), 3, H, W]`` in ``torch.channels_last`` memory format,
        entry ``g * (m - 1) + t`` being ``frames[g*m + t] - frames[g*m + t + 1]``.
    """
    channels, height, width = frames.shape[1:]
    grouped = frames.reshape(-1, n_length, channels, height, width)
    groups = grouped.shape[0]
    diffs = torch.empty(
        (groups * (n_length - 1), channels, height, width),
        dtype=frames.dtype,
        device=frames.device,
        memory_format=torch.channels_last,
    )
    # One pass: the subtraction writes the channels-last buffer directly.
    torch.sub(grouped[:, :-1], grouped[:, 1:], out=diffs.view(groups, n_length - 1, channels, height, width))
    return diffs


def _features(diffs: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``conv(diffs) + eps`` as ``[B, H, W, C']`` (a view of the channels-last conv output)."""
    bias = torch.full((weight.shape[0],), eps, dtype=weight.dtype, device=weight.device)
    features = F.conv2d(diffs, weight, bias, padding=weight.shape[-1] // 2)
    # For a channels-last result this permute is a contiguous view; for any other
    # layout it is still correct, only the norm below gets slower.
    return features.permute(0, 2, 3, 1)


def _maps(features: torch.Tensor, n_length: int) -> torch.Tensor:
    height, width = features.shape[1:3]
    return torch.linalg.vector_norm(features, ord=2, dim=-1).view(-1, n_length - 1, height, width)


class _PAMaps(torch.autograd.Function):
    """PA maps with a hand-written backward (see :func:`pa_maps_fast`)."""

    @staticmethod
    def forward(ctx: FunctionCtx, frames: torch.Tensor, weight: torch.Tensor, n_length: int, eps: float) -> torch.Tensor:
        diffs = frame_differences(frames, n_length)
        features = _features(diffs, weight, eps)
        maps = _maps(features, n_length)
        ctx.save_for_backward(diffs, weight, features, maps)
        ctx.n_length = n_length
        ctx.frames_shape = frames.shape
        return maps

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_maps: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        diffs, weight, features, maps = ctx.saved_tensors
        n_length = ctx.n_length
        batch, height, width, _ = features.shape
        # d||f|| / df = f / ||f||, with 0 where the norm is 0 (as torch's own norm backward).
        scale = (grad_maps.reshape(batch, height, width) / maps.reshape(batch, height, width)).masked_fill_(
            maps.reshape(batch, height, width) == 0, 0
        )
        grad_features = (features * scale.unsqueeze(-1)).permute(0, 3, 1, 2)
        need_frames, need_weight = ctx.needs_input_grad[:2]
        padding = weight.shape[-1] // 2
        grad_diffs, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_features,
            diffs,
            weight,
            None,
            [1, 1],
            [padding, padding],
            [1, 1],
            False,
            [0, 0],
            1,
            [need_frames, need_weight, False],
        )
        grad_frames = None
        if need_frames:
            grad_diffs = grad_diffs.reshape(-1, n_length - 1, *grad_diffs.shape[1:])
            # frames[t] enters diff t with + and diff t-1 with -.
            grad_grouped = F.pad(grad_diffs, (0, 0, 0, 0, 0, 0, 0, 1)) - F.pad(grad_diffs, (0, 0, 0, 0, 0, 0, 1, 0))
            grad_frames = grad_grouped.reshape(ctx.frames_shape)
        if grad_weight is not None:
            grad_weight = grad_weight.contiguous()
        return grad_frames, grad_weight, None, None


def _needs_grad(frames: torch.Tensor, weight: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (frames.requires_grad or weight.requires_grad)


def _pa_maps_chunk(frames: torch.Tensor, weight: torch.Tensor, n_length: int, eps: float) -> torch.Tensor:
    """PA maps of one chunk of whole groups (see :func:`pa_maps_fast`)."""
    needs_grad = _needs_grad(frames, weight)
    if needs_grad and not torch.is_autocast_enabled(frames.device.type):
        return _PAMaps.apply(frames, weight, n_length, eps)
    grouped = frames.reshape(-1, n_length, *frames.shape[1:])
    if needs_grad:
        diffs = (grouped[:, :-1] - grouped[:, 1:]).flatten(0, 1).contiguous(memory_format=torch.channels_last)
    else:
        diffs = frame_differences(frames, n_length)
    return _maps(_features(diffs, weight, eps), n_length)


def pa_maps_fast(frames: torch.Tensor, weight: torch.Tensor, n_length: int, eps: float) -> torch.Tensor:
    """PA maps, ``||conv(F_t - F_{t+1}) + eps||_2`` over the conv's channels, computed fast.

    Same contract and numbers (to float rounding) as :func:`ops.PAN_modules.pa_maps`;
    the caller validates the shapes.

    When autograd needs a gradient the custom backward of :class:`_PAMaps` is used,
    except under autocast, where the same operations run through ordinary autograd
    so that autocast's per-operation dtypes apply in both passes.

    Args:
        frames: ``[G * n_length, 3, H, W]``, any memory format.
        weight: ``[C', 3, k, k]``, odd ``k``.
        n_length: frames per group ``m >= 2``.
        eps: added to every feature difference before the norm.

    Returns:
        ``[G, n_length - 1, H, W]``, contiguous.
    """
    groups = frames.shape[0] // n_length
    height, width = frames.shape[-2:]
    # Chunks only without autograd: when training, every chunk's features are kept for the
    # backward anyway, and chunking measured no gain there (tools/bench_pa.py --ideas).
    per_chunk = groups if _needs_grad(frames, weight) else groups_per_chunk(
        groups, n_length, height, width, weight.shape[0], frames.element_size(), frames.device)
    if per_chunk >= groups:
        return _pa_maps_chunk(frames, weight, n_length, eps)
    return torch.cat([_pa_maps_chunk(chunk, weight, n_length, eps) for chunk in frames.split(per_chunk * n_length)])
