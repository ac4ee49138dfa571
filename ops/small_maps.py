"""Convolutions on feature maps smaller than their kernel, without the work that only meets padding.

A 3x3 convolution (padding 1) on a 1x1 map uses its centre tap alone: the
other eight multiply padding zeros. On tiny inputs (the quickstart's 28x28
crops leave ResNet's layer4 at 1x1) such convolutions still run as 3x3, and on
CPUs with only AVX2 their backward pass is the slowest part of a training step
(measured with ``ONEDNN_MAX_CPU_ISA=AVX2``: 82 ms forward+backward for 512
channels and 128 maps, against 5 ms for the centre tap alone).

:func:`trim_small_maps` makes a model's convolutions keep only the taps that
can reach the input, padding the input explicitly where a side still needs it.
The result is the same convolution: the same outputs and the same gradients
(those of the dropped taps are zero either way), the same parameters and
``state_dict``. Where every tap reaches the input (224x224 inputs throughout a
ResNet) nothing changes at all.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=256)
def reachable_taps(size: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int, int, int]:
    """For one spatial axis: ``(first, last, pad_before, pad_after)`` of the taps that meet the input.

    ``first..last`` are the kernel taps some output reads a real input value
    with; convolving the input, padded by ``pad_before``/``pad_after`` (negative
    values crop), with those taps alone and no padding gives the same outputs.
    """
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    reached = [i for i in range(kernel)
               if any(0 <= o * stride - padding + i * dilation < size for o in range(out))]
    if not reached:  # every tap meets padding only: keep the convolution as it is
        return 0, kernel - 1, padding, padding
    first, last = reached[0], reached[-1]
    before = padding - first * dilation
    span = (last - first) * dilation
    after = (out - 1) * stride - before + span - (size - 1)
    return first, last, before, after


def conv2d_reachable(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None) -> torch.Tensor:
    """``conv``'s convolution of ``x`` ``[N, C, H, W]`` computed with the reachable taps only."""
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    ph, pw = conv.padding if isinstance(conv.padding, tuple) else (conv.padding, conv.padding)
    top, bottom, pad_top, pad_bottom = reachable_taps(x.shape[-2], kh, sh, ph, dh)
    left, right, pad_left, pad_right = reachable_taps(x.shape[-1], kw, sw, pw, dw)
    if (top, bottom, left, right) == (0, kh - 1, 0, kw - 1):
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    x = F.pad(x, (pad_left, pad_right, pad_top, pad_bottom))
    return F.conv2d(x, weight[:, :, top:bottom + 1, left:right + 1], bias, conv.stride, 0, conv.dilation,
                    conv.groups)


def _trimmed_conv_forward(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None) -> torch.Tensor:
    return conv2d_reachable(conv, x, weight, bias)


def trim_small_maps(model: nn.Module) -> int:
    """Make every zero-padded ``nn.Conv2d`` with a kernel larger than 1x1 in ``model`` skip the taps that
    meet padding only; returns how many convolutions were changed (their parameters stay as they were)."""
    changed = 0
    for module in model.modules():
        if (isinstance(module, nn.Conv2d) and module.padding_mode == "zeros" and module.kernel_size != (1, 1)
                and not isinstance(module.padding, str)):
            module._conv_forward = functools.partial(_trimmed_conv_forward, module)
            changed += 1
    return changed
