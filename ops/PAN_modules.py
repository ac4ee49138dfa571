"""The two PAN building blocks: PA (Persistence of Appearance) and VAP.

Both keep the parameter names of the released checkpoints
(``shallow_conv.*`` for PA; ``TES.0.weight``, ``TES.2.weight``, ``pred.*`` for VAP),
so ``PA.load_state_dict`` / ``VAP.load_state_dict`` accept the released tensors.

The computations are pure functions (:func:`pa_maps`, :func:`vap_pool`) with thin
``nn.Module`` wrappers holding the parameters. :func:`pa_maps` is the plain,
easy-to-check version of PA; ``PA`` runs :func:`ops.pa_fast.pa_maps_fast`, which
gives the same numbers several times faster (``docs/BENCHMARKS.md``).

Example::

    >>> import torch
    >>> from ops.PAN_modules import PA, VAP
    >>> pa = PA(n_length=4)
    >>> frames = torch.randn(2 * 8 * 4, 3, 56, 56)   # N=2 clips, T=8 segments, m=4 frames
    >>> pa(frames).shape                             # m - 1 = 3 PA maps per segment
    torch.Size([16, 3, 56, 56])
    >>> vap = VAP(n_segment=8, feature_dim=2048, num_class=174, dropout_ratio=0.5)
    >>> vap(torch.randn(2 * 8, 2048)).shape
    torch.Size([2, 174])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ops.pa_fast import pa_maps_fast

#: Added to the feature difference before the norm, as ``nn.PairwiseDistance`` did
#: in the published implementation; it keeps the norm differentiable where two
#: frames are identical.
PA_EPS = 1e-6


def _check_pa_input(frames: torch.Tensor, n_length: int) -> None:
    if n_length < 2:
        raise ValueError(f"PA needs at least 2 frames per group, got n_length={n_length}")
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"PA expects frames of shape [G*{n_length}, 3, H, W], got {tuple(frames.shape)}")
    if frames.shape[0] % n_length:
        raise ValueError(
            f"PA got {frames.shape[0]} frames, not a multiple of n_length={n_length}"
        )


def pa_maps(frames: torch.Tensor, weight: torch.Tensor, n_length: int) -> torch.Tensor:
    """PA maps from a stack of frames (the plain version; ``PA`` runs the fast one).

    For every group of ``n_length`` consecutive frames, each frame is filtered by
    the shallow convolution (``weight``: ``[C', 3, k, k]``, stride 1, 'same'
    padding), and each pair of neighbouring frames ``t, t+1`` gives one map: the
    per-pixel L2 norm over the C' channels of ``F_t - F_{t+1} + eps``.

    The convolution is linear, so it is applied once to the frame differences
    (``m - 1`` convolutions instead of ``m``); its bias cancels in the difference.

    Args:
        frames: ``[G * n_length, 3, H, W]``, G groups of consecutive frames.
        weight: the shallow convolution's kernel, ``[C', 3, k, k]`` with odd ``k``.
        n_length: frames per group, ``m >= 2``.

    Returns:
        ``[G, n_length - 1, H, W]``.
    """
    _check_pa_input(frames, n_length)
    height, width = frames.shape[-2:]
    grouped = frames.reshape(-1, n_length, 3, height, width)
    diffs = (grouped[:, :-1] - grouped[:, 1:]).reshape(-1, 3, height, width)
    features = F.conv2d(diffs, weight, padding=weight.shape[-1] // 2)
    features = features.reshape(-1, n_length - 1, weight.shape[0], height, width)
    return torch.linalg.vector_norm(features + PA_EPS, ord=2, dim=2)


class PA(nn.Module):
    """Persistence of Appearance: motion cues from a shallow convolution's features.

    Args:
        n_length: consecutive frames per segment, ``m >= 2`` (4 in the paper).
        fast: compute with :func:`ops.pa_fast.pa_maps_fast` (default) rather than
            the plain :func:`pa_maps`; both give the same maps and gradients.

    Shape:
        input ``[N*T*m, 3, H, W]`` (any tensor that views as that, e.g. the TSN
        layout ``[N*T, m*3, H, W]``), output ``[N*T, m-1, H, W]``.
    """

    def __init__(self, n_length: int, *, fast: bool = True) -> None:
        super().__init__()
        if n_length < 2:
            raise ValueError(f"PA needs n_length >= 2, got {n_length}")
        self.n_length = n_length
        self.fast = fast
        self.shallow_conv = nn.Conv2d(3, 8, kernel_size=7, stride=1, padding=3)
        nn.init.normal_(self.shallow_conv.weight, 0.0, 0.001)
        nn.init.zeros_(self.shallow_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.reshape(-1, 3, *x.shape[-2:])
        if not self.fast:
            return pa_maps(frames, self.shallow_conv.weight, self.n_length)
        _check_pa_input(frames, self.n_length)
        return pa_maps_fast(frames, self.shallow_conv.weight, self.n_length, PA_EPS)

    def extra_repr(self) -> str:
        return f"n_length={self.n_length}, fast={self.fast}"


def vap_levels(n_segment: int) -> int:
    """Number of VAP pyramid levels: ``floor(log2(n_segment))``."""
    if n_segment < 2:
        raise ValueError(f"VAP needs n_segment >= 2, got {n_segment}")
    return int(math.floor(math.log2(n_segment)))


def vap_pool(features: torch.Tensor, n_segment: int) -> torch.Tensor:
    """The temporal pyramid of VAP: ``K = 2**L - 1`` max-pooled features per clip.

    Level ``i`` (``i = 0 .. L-1``, ``L = floor(log2(n_segment))``) max-pools over
    time with kernel ``k = n_segment // 2**i`` and dilation ``2**i``, giving the
    ``2**i`` features ``max(x[j], x[j + 2**i], ..., x[j + (k-1) 2**i])`` for
    ``j < 2**i``. Levels are concatenated from coarse to fine.

    When ``n_segment`` is a power of two this is exactly the published dilated
    ``MaxPool3d``; otherwise the published code failed, and here each level keeps
    its first ``2**i`` windows.

    Args:
        features: ``[N*T, D]`` with ``T = n_segment``.

    Returns:
        ``[N, K, D]``.
    """
    dim = features.shape[-1]
    clips = features.reshape(-1, n_segment, dim)
    pooled = []
    for level in range(vap_levels(n_segment)):
        step = 2**level
        kernel = n_segment // step
        windows = clips[:, : kernel * step].reshape(-1, kernel, step, dim)
        pooled.append(windows.amax(dim=1))
    return torch.cat(pooled, dim=1)


class VAP(nn.Module):
    """Various-timescale Aggregation Pooling: the PAN classification head.

    Pools the per-segment features into a temporal pyramid of ``K`` features
    (:func:`vap_pool`), weighs them with a softmax over ``K`` predicted by a
    squeeze-excitation MLP (``TES``), sums, and classifies.

    Args:
        n_segment: segments per clip, ``T >= 2``.
        feature_dim: ``D``, the backbone's feature size.
        num_class: number of classes.
        dropout_ratio: dropout before the classifier.

    Shape:
        input ``[N*T, D]``, output ``[N, num_class]``.
    """

    def __init__(self, n_segment: int, feature_dim: int, num_class: int, dropout_ratio: float) -> None:
        super().__init__()
        self.n_segment = n_segment
        self.num_scales = 2 ** vap_levels(n_segment) - 1
        k = self.num_scales
        self.TES = nn.Sequential(
            nn.Linear(k, 4 * k, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(4 * k, k, bias=False),
        )
        self.dropout = nn.Dropout(p=dropout_ratio)
        self.pred = nn.Linear(feature_dim, num_class)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = vap_pool(x, self.n_segment)  # [N, K, D]
        scale_weights = torch.softmax(self.TES(pyramid.mean(dim=2)), dim=1)  # [N, K]
        clip_feature = (pyramid * scale_weights.unsqueeze(2)).sum(dim=1)  # [N, D]
        return self.pred(self.dropout(clip_feature))

    def extra_repr(self) -> str:
        return f"n_segment={self.n_segment}, num_scales={self.num_scales}"
