"""int8 inference for CPUs without native bf16: the backbone quantized, PA and the head in float.

On a CPU without AVX512-BF16/AMX, bf16 autocast is emulated and slower than
fp32, while int8 convolutions have native instructions on every x86 CPU of the
last decade (AVX2 ``vpmaddubsw``; AVX512-VNNI / AVX-VNNI where present). This
module applies PyTorch's own post-training static quantization
(``torch.ao.quantization.quantize_fx`` with the ``x86`` backend, BatchNorm and
ReLU fused into the convolutions) to the 2D backbone of a PAN model,
calibrated on a few clips.

The numbers (:func:`int8_qconfig`; each choice measured on a trained PAN Lite
ResNet-18, 28x28, 240 validation videos, against fp32):

* **Activations: per-tensor uint8 over the full 0..255 range** (PyTorch's x86
  default keeps them to 0..127, ``reduce_range``; the full range alone took
  top-1 agreement from 95.4% to 98.3%), **scales from the min/max seen in
  calibration** (:class:`~torch.ao.quantization.observer.MinMaxObserver`:
  relative logit error 0.029 and 0.034 against 0.030 and 0.036 for PyTorch's
  default histogram observer, 32 and 64 calibration clips).
* **Weights: per-output-channel symmetric int8 within -63..63 (7 bits).** An
  AVX2 CPU (no VNNI) multiplies uint8 by int8 with ``vpmaddubsw``, which sums
  two products into int16: 255 * 127 * 2 overflows it, 255 * 63 * 2 does not.
  Full-range activations therefore take their headroom from the weights, which
  are per-channel and lose less (same agreement as 8-bit weights, measured).
  VNNI CPUs would not overflow either way; one setting keeps the numbers the same
  on every x86 CPU.

What stays in float, and why (:data:`FLOAT_PARTS`, :func:`float_stages`):

* **PA** (the shallow 7x7 convolution and the per-pixel norm of feature
  differences): its maps are differences of nearly equal features, exactly what
  8-bit activations would flatten.
* **The head** (VAP, or the linear classifier and the segment consensus): a
  few thousand multiply-adds per clip; int8 would save nothing and cost accuracy.
* **A backbone stage whose maps have fewer than** :data:`MIN_INT8_PIXELS`
  **pixels** at the calibration input (ResNet-18 at 28x28: ``layer4``, 1x1 maps).
  Global average pooling averages the rounding noise of the last stage's output
  over its pixels; on a 1x1 map nothing averages it, and that stage was the most
  sensitive one measured (quantized alone: 97.1% agreement, every other stage
  >= 99.2%; all int8 but it: 99.2-99.6%, against 97.9-98.3% with it int8).
  On 1x1 maps most taps of its 3x3 kernels meet padding only, so its
  convolutions are cut to the taps that meet the maps (:func:`trim_float_stage`;
  exact for the calibration size, and the model then refuses another size):
  float layer4 then costs ~2 ms of ~10 ms per clip at 28x28 (with full 3x3
  kernels: 17 ms, its fp32 weights dominating). At 224x224 every stage has
  >= 7x7 maps and is int8.

The stem convolution (which sees the PA maps next to the RGB channels) is int8:
keeping it float changed the logit error by under 2% of itself (measured).

The temporal shift (TSM) moves channels between the segments of a clip. Left to
FX it would dequantize, shift in float and quantize three pieces again per
block, which cost about as much as the int8 convolutions saved. Here it runs on
the int8 codes (:func:`quantized_temporal_shift`): a shift only moves values,
so the scale and zero point of its input are exact for its output, and the
zeros that enter at a clip's ends are the zero point.

Only the torchvision ResNets are supported; another backbone is refused with a
:class:`QuantizationUnsupported` naming it rather than left partly in float.
"""

from __future__ import annotations

import copy
import logging
from types import ModuleType

import torch
from torch import nn

from ops.errors import PanError
from ops.temporal_shift import TemporalShift, temporal_shift

logger = logging.getLogger(__name__)

#: Backbones whose graph FX quantizes whole (conv + BatchNorm + ReLU, residual add + ReLU).
SUPPORTED_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
#: PyTorch's quantized engine for x86 CPUs (fbgemm and oneDNN kernels, chosen per layer).
QUANTIZED_ENGINE = "x86"
#: The module that provides the flow; part of PyTorch (deprecated there in favour of torchao, so checked).
QUANTIZE_FX_MODULE = "torch.ao.quantization.quantize_fx"
#: Weight codes (7 bits, symmetric: scale max|w| / 63): AVX2's ``vpmaddubsw`` pair sums of u8 x s8
#: products fit int16 with full-range activations (255 * 63 * 2 = 32130 <= 32767).
WEIGHT_QUANT_RANGE = (-63, 63)
#: A backbone stage whose output maps have fewer pixels than this (at the calibration input) stays float.
MIN_INT8_PIXELS = 4
#: The parts of a PAN model that are never quantized, and why (see the module docstring).
FLOAT_PARTS = {
    "PA": "its maps are norms of differences of nearly equal features, which 8-bit activations flatten",
    "head": "a few thousand multiply-adds per clip: nothing to save, accuracy to lose",
}
#: The ResNet stages that :func:`float_stages` considers, in order.
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
#: Backbone inputs (frames) per calibration forward.
CALIBRATION_CHUNK = 64


class QuantizationUnavailable(PanError, RuntimeError):
    """This PyTorch build lacks what int8 inference needs (the module or the engine is named)."""


class QuantizationUnsupported(PanError, ValueError):
    """The model has a part int8 inference does not handle (the part is named)."""


def require_quantize_fx() -> ModuleType:
    """``torch.ao.quantization.quantize_fx``, with the ``x86`` engine selected.

    Raises:
        QuantizationUnavailable: the module cannot be imported, or the engine is not built in.
    """
    try:
        import importlib

        quantize_fx = importlib.import_module(QUANTIZE_FX_MODULE)
    except ImportError as err:
        raise QuantizationUnavailable(
            f"int8 inference needs {QUANTIZE_FX_MODULE} (PyTorch's FX graph-mode quantization), which this "
            f"PyTorch {torch.__version__} cannot import ({err}); install a PyTorch that has it (2.1-2.14 do), "
            "or use --fast fp32 / --fuse_bn --channels_last"
        ) from err
    engines = supported_engines()
    if QUANTIZED_ENGINE not in engines:
        raise QuantizationUnavailable(
            f"int8 inference needs PyTorch's {QUANTIZED_ENGINE!r} quantized engine, and this build has only "
            f"{engines}; use a PyTorch build for x86 CPUs"
        )
    torch.backends.quantized.engine = QUANTIZED_ENGINE
    return quantize_fx


def supported_engines() -> list[str]:
    """The quantized engines this PyTorch build has (``torch.backends.quantized.supported_engines``)."""
    return list(torch.backends.quantized.supported_engines)


def check_quantizable(model: nn.Module) -> None:
    """Refuse, naming the reason, a model :func:`quantize_pan` would not quantize whole.

    Raises:
        QuantizationUnsupported: not a PAN model, a backbone other than a ResNet, or temporal pooling.
    """
    arch = getattr(model, "arch", None) or getattr(model, "base_model_name", None)
    if not hasattr(model, "base_model") or not hasattr(model, "segment_inputs"):
        raise QuantizationUnsupported(f"int8 inference quantizes PAN models; got a {type(model).__name__}")
    if arch not in SUPPORTED_BACKBONES:
        raise QuantizationUnsupported(
            f"int8 inference does not support the backbone {arch!r} (supported: {', '.join(SUPPORTED_BACKBONES)}); "
            "use --fast fp32 or --amp for it"
        )
    if getattr(model, "temporal_pool", False):
        raise QuantizationUnsupported("int8 inference does not support --temporal_pool (its 3D max pooling has "
                                      "no int8 kernel); use --fast fp32 for this model")


def codes_view(q: torch.Tensor) -> torch.Tensor:
    """The uint8 codes of the ``quint8`` tensor ``q`` as a view of its memory (``int_repr`` copies them)."""
    return torch.empty(0, dtype=torch.uint8, device=q.device).set_(q.untyped_storage(), q.storage_offset(),
                                                                   q.size(), q.stride())


def quantized_temporal_shift(x: torch.Tensor, n_segment: int, fold_div: int, mode: str) -> torch.Tensor:
    """:func:`ops.temporal_shift.temporal_shift` on a per-tensor ``quint8`` tensor, on its codes.

    The output is allocated quantized and its codes written once from views of
    the input's codes (:func:`codes_view`): no ``int_repr`` copy and no re-wrapping
    copy, which made the shift 3-4x faster than the previous version (a copy of
    the codes, two clones and a wrap; measured 4.1 -> 1.1 ms on 8x256x56x56).

    Args:
        x: quantized ``[N*T, C, H, W]`` (any memory format; channels-last, as
            the quantized convolutions write it, is the fast one).

    Returns:
        quantized ``[N*T, C, H, W]``, channels-last, with ``x``'s scale and zero point.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    nt, channels, height, width = x.shape
    out = torch._empty_affine_quantized(x.shape, scale=x.q_scale(), zero_point=x.q_zero_point(), dtype=x.dtype,
                                        device=x.device, memory_format=torch.channels_last)
    # Channels-last: [N, T, H, W, C] views of the same memory.
    src = codes_view(x).permute(0, 2, 3, 1).view(nt // n_segment, n_segment, height, width, channels)
    dst = codes_view(out).permute(0, 2, 3, 1).view(nt // n_segment, n_segment, height, width, channels)
    fold = channels // fold_div
    zero = x.q_zero_point()  # the code of 0.0: what enters at the clip's ends
    # Channels [fold, 2 fold) come from segment t - 1 (both modes).
    dst[:, 1:, ..., fold : 2 * fold] = src[:, :-1, ..., fold : 2 * fold]
    dst[:, :1, ..., fold : 2 * fold] = zero
    if mode != "online":  # channels [0, fold) come from segment t + 1
        dst[:, :-1, ..., :fold] = src[:, 1:, ..., :fold]
        dst[:, -1:, ..., :fold] = zero
    else:
        dst[..., :fold] = src[..., :fold]
    dst[..., 2 * fold :] = src[..., 2 * fold :]
    return out


class SegmentShift(nn.Module):
    """The temporal shift alone (a :class:`TemporalShift` without its convolution), float.

    Split from the convolution so that FX sees ``shift -> conv -> bn -> relu``
    and fuses the last three, and so that the shift can be swapped for its
    int8 version (:class:`QuantizedSegmentShift`) as an FX custom module.
    """

    def __init__(self, n_segment: int, fold_div: int, mode: str) -> None:
        super().__init__()
        self.n_segment, self.fold_div, self.mode = n_segment, fold_div, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N*T, C, H, W]`` -> shifted ``[N*T, C, H, W]``."""
        return temporal_shift(x, self.n_segment, self.fold_div, self.mode)

    def extra_repr(self) -> str:
        return f"n_segment={self.n_segment}, fold_div={self.fold_div}, mode={self.mode}"


class ObservedSegmentShift(SegmentShift):
    """The shift during calibration (FX observes its input and output; it computes in float)."""

    @classmethod
    def from_float(cls, module: SegmentShift, *args, **kwargs) -> "ObservedSegmentShift":
        observed = cls(module.n_segment, module.fold_div, module.mode)
        observed.qconfig = module.qconfig  # FX's convert reads it
        return observed


class QuantizedSegmentShift(SegmentShift):
    """The shift on int8 codes (:func:`quantized_temporal_shift`): quantized in, quantized out."""

    @classmethod
    def from_observed(cls, module: ObservedSegmentShift, *args, **kwargs) -> "QuantizedSegmentShift":
        return cls(module.n_segment, module.fold_div, module.mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantized_temporal_shift(x, self.n_segment, self.fold_div, self.mode)


def split_temporal_shifts(backbone: nn.Module) -> int:
    """Replace, in place, each ``TemporalShift(conv)`` by ``Sequential(SegmentShift, conv)``; returns the count.

    Same computation, same parameters (their names change: inference only).
    """
    count = 0
    for parent in list(backbone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, TemporalShift):
                setattr(parent, name, nn.Sequential(SegmentShift(child.n_segment, child.fold_div, child.mode),
                                                    child.net))
                count += 1
    return count


class FloatHeadBackbone(nn.Module):
    """A quantized feature extractor followed by the float head it was cut from.

    Shape: ``[N*T, C, H, W]`` -> the head's output (``[N, num_class]`` for VAP,
    ``[N*T, D]`` for the dropout that precedes PAN's ``new_fc``).
    """

    def __init__(self, features: nn.Module, head: nn.Module, input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.features = features
        self.head = head
        #: The only input size the features are exact for (a float stage's convolutions cut to its maps), or None.
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"this int8 model was calibrated on {self.input_size[0]}x{self.input_size[1]} inputs "
                             f"and cut its float stage's convolutions to that size; got {x.shape[-2]}x{x.shape[-1]} "
                             "(calibrate on inputs of the size it will run)")
        return self.head(self.features(x))


def int8_qconfig():
    """The ``QConfig`` of every quantized layer: full-range uint8 activations with min/max scales,
    per-channel symmetric 7-bit weights (why: the module docstring)."""
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    low, high = WEIGHT_QUANT_RANGE
    return QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=False),
                   weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                             quant_min=low, quant_max=high))


def map_sizes(features: nn.Module, sample: torch.Tensor) -> tuple[dict[str, tuple[int, int]], dict[nn.Module, tuple[int, int]]]:
    """For the backbone input ``sample``: ``{stage: (height, width)}`` of each ResNet stage's output, and
    ``{conv: (height, width)}`` of each ``nn.Conv2d``'s input."""
    stages: dict[str, tuple[int, int]] = {}
    convs: dict[nn.Module, tuple[int, int]] = {}
    hooks = [getattr(features, name).register_forward_hook(
        lambda _m, _i, out, name=name: stages.__setitem__(name, tuple(out.shape[-2:])))
        for name in RESNET_STAGES if hasattr(features, name)]
    hooks += [conv.register_forward_hook(lambda m, inputs, _o: convs.__setitem__(m, tuple(inputs[0].shape[-2:])))
              for conv in features.modules() if isinstance(conv, nn.Conv2d)]
    try:
        with torch.no_grad():
            features(sample)
    finally:
        for hook in hooks:
            hook.remove()
    return stages, convs


def reachable_conv(conv: nn.Conv2d, size: tuple[int, int]) -> nn.Conv2d | None:
    """The same convolution for ``size`` inputs with only the kernel taps that meet the input
    (a 3x3 on a 1x1 map: its centre tap, a 1x1 convolution), or None where nothing is dropped.

    Exact for that input size. Only where no explicit padding is left to add (else None).
    The new weight is its own contiguous tensor: slicing the kernel at every call (what
    :func:`ops.small_maps.trim_small_maps` does) measured slower than the full 3x3 here.
    """
    from ops.small_maps import reachable_taps

    if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros" or conv.kernel_size == (1, 1):
        return None
    axes = [reachable_taps(n, k, s, p, d) for n, k, s, p, d in
            zip(size, conv.kernel_size, conv.stride, conv.padding, conv.dilation)]
    if any(before != 0 or after != 0 for _, _, before, after in axes):
        return None
    (top, bottom, _, _), (left, right, _, _) = axes
    if (bottom - top + 1, right - left + 1) == conv.kernel_size:
        return None
    trimmed = nn.Conv2d(conv.in_channels, conv.out_channels, (bottom - top + 1, right - left + 1), conv.stride,
                        0, conv.dilation, conv.groups, conv.bias is not None).train(conv.training)
    with torch.no_grad():
        trimmed.weight.copy_(conv.weight[:, :, top:bottom + 1, left:right + 1])
        if conv.bias is not None:
            trimmed.bias.copy_(conv.bias)
    return trimmed


def trim_float_stage(stage: nn.Module, conv_sizes: dict[nn.Module, tuple[int, int]]) -> int:
    """Replace, in place, the convolutions of a float ``stage`` by :func:`reachable_conv`; returns the count.

    A float stage has tiny maps (:func:`float_stages`), where most taps of its 3x3 kernels meet
    padding only; with the full kernels its weights alone (ResNet-18's layer4: 33 MB in fp32)
    made the int8 model 2.3x slower than with that stage int8 (28x28, measured).
    """
    count = 0
    for parent in list(stage.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child in conv_sizes:
                trimmed = reachable_conv(child, conv_sizes[child])
                if trimmed is not None:
                    setattr(parent, name, trimmed)
                    count += 1
    return count


def float_stages(sizes: dict[str, tuple[int, int]]) -> list[str]:
    """The stages kept in float: those whose maps have fewer than :data:`MIN_INT8_PIXELS` pixels."""
    return [name for name, (height, width) in sizes.items() if height * width < MIN_INT8_PIXELS]


def quantize_backbone(backbone: nn.Module, head_attr: str, calibration: torch.Tensor) -> FloatHeadBackbone:
    """An int8 copy of a torchvision ResNet ``backbone`` (in eval mode), its head ``head_attr`` left in float.

    The stages :func:`float_stages` names for the calibration input's size stay float too (logged).

    Args:
        backbone: PAN's ``base_model`` (ResNet, possibly with temporal shifts, head in ``head_attr``).
        calibration: backbone inputs ``[N*T, C, H, W]`` whose activation ranges set the int8 scales.

    Raises:
        QuantizationUnavailable: see :func:`require_quantize_fx`.
    """
    quantize_fx = require_quantize_fx()
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import ConvertCustomConfig, PrepareCustomConfig

    features = copy.deepcopy(backbone).eval()
    head = getattr(features, head_attr)
    setattr(features, head_attr, nn.Identity())
    shifts = split_temporal_shifts(features)
    prepare_config = PrepareCustomConfig().set_float_to_observed_mapping(SegmentShift, ObservedSegmentShift)
    convert_config = ConvertCustomConfig().set_observed_to_quantized_mapping(ObservedSegmentShift,
                                                                             QuantizedSegmentShift)
    clip = next((m.n_segment for m in features.modules() if isinstance(m, SegmentShift)), 1)  # frames the shift needs
    sizes, conv_sizes = map_sizes(features, calibration[:clip])
    kept = float_stages(sizes)
    trimmed = sum(trim_float_stage(getattr(features, name), conv_sizes) for name in kept)
    qconfig_mapping = get_default_qconfig_mapping(QUANTIZED_ENGINE).set_global(int8_qconfig())
    for name in kept:
        qconfig_mapping.set_module_name(name, None)
    with torch.no_grad():
        observed = quantize_fx.prepare_fx(features, qconfig_mapping, (calibration[:1],),
                                          prepare_custom_config=prepare_config)
        for start in range(0, calibration.shape[0], CALIBRATION_CHUNK):  # bounded memory for many clips
            observed(calibration[start:start + CALIBRATION_CHUNK])
        quantized = quantize_fx.convert_fx(observed, convert_custom_config=convert_config)
    logger.info("int8: backbone quantized (%d temporal shifts on int8 codes), calibrated on %d frames of %s; "
                "in float: %s (%d convolutions cut to the taps that meet their maps)", shifts, calibration.shape[0], "x".join(map(str, calibration.shape[1:])),
                ", ".join(f"{n} ({'x'.join(map(str, sizes[n]))} maps)" for n in kept) or "no backbone stage", trimmed)
    return FloatHeadBackbone(quantized, head, tuple(calibration.shape[-2:]) if trimmed else None)


def quantize_pan(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """An int8 copy of the PAN ``model`` (eval mode, CPU): backbone int8, PA and head in float.

    Args:
        model: a PAN model with a ResNet backbone.
        calibration: model inputs ``[B, T*m*3, H, W]`` (a few clips, normalised as for evaluation).

    Returns:
        a model with the same interface: ``[B, T*m*3, H, W]`` -> ``[B, num_class]`` float logits.

    Raises:
        QuantizationUnsupported: see :func:`check_quantizable`.
        QuantizationUnavailable: see :func:`require_quantize_fx`.
    """
    check_quantizable(model)
    require_quantize_fx()
    if model.training:
        raise ValueError("quantize_pan needs a model in eval mode (call model.eval() first)")
    from ops.backbones import get_backbone_spec

    with torch.no_grad():
        backbone_inputs = model.segment_inputs(calibration.float().cpu())
    quantized = copy.deepcopy(model)
    quantized.base_model = quantize_backbone(model.base_model, get_backbone_spec(model.arch).head_attr,
                                             backbone_inputs)
    return quantized.eval()


class CalibratedOnFirstBatch(nn.Module):
    """Quantizes ``model`` (:func:`quantize_pan`) with the first batch it is given, then runs the int8 model.

    For tools that see their data only when they run it (an evaluation's first
    batch, the demo's clip). The unsupported cases are refused here, at
    construction, not at the first batch. Shape: ``[B, T*m*3, H, W]`` -> ``[B, num_class]``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_quantizable(model)
        require_quantize_fx()
        self.float_model = model.eval()
        self.int8: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8 is None:
            logger.info("int8: calibrating on the first batch (%d clip(s))", x.shape[0])
            self.int8 = quantize_pan(self.float_model, x)
        return self.int8(x)
